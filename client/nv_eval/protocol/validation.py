"""Validating a composed config document into :class:`RunConfig` with one-line errors.

Errors name the field path, what was given and what is allowed; unknown keys list the
valid keys of the variant the document selected (its ``type``) and the closest match.
Fields that hold the NAME of an environment variable are checked to be names, and their
value is never echoed (a user may have pasted a secret there by mistake).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

from .config import (
    BUILTIN_EXECUTORS,
    DEPLOYMENT_TYPES,
    CustomExecution,
    RunConfig,
)


class ConfigError(ValueError):
    """A config document is invalid; ``str(e)`` is one line naming the field."""


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING = object()


def _parts(path: str) -> list[str | int]:
    return [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _PART.finditer(path)]


def _value_at(doc: Any, path: str) -> Any:
    cur = doc
    for p in _parts(path):
        if isinstance(p, int) and isinstance(cur, list) and -len(cur) <= p < len(cur):
            cur = cur[p]
        elif isinstance(p, str) and isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return _MISSING
    return cur


def _pick(info: Any, value: Any) -> Any:
    """Narrow a type to what ``value`` selects: the tagged variant named by its ``type``, the struct of an Optional."""
    while True:
        if isinstance(info, msgspec.inspect.UnionType):
            structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
            others = [t for t in info.types if not isinstance(t, (msgspec.inspect.StructType, msgspec.inspect.NoneType))]
            if structs:
                tag = value.get(structs[0].tag_field) if isinstance(value, dict) and structs[0].tag_field else None
                chosen = next((s for s in structs if tag is not None and s.tag == tag), None)
                if chosen is None:
                    chosen = next((s for s in structs if s.tag == structs[0].tag or s.tag is None), structs[0])
                    if isinstance(value, dict) and structs[0].tag_field and tag is None:
                        chosen = structs[0]
                return chosen
            if len(others) == 1:
                info = others[0]
                continue
            return info
        return info


def _type_at(doc: Any, path: str) -> Any:
    """msgspec type info of the field at ``path``, following the variants the document selects."""
    info: Any = msgspec.inspect.type_info(RunConfig)
    cur: Any = doc
    for p in _parts(path):
        info = _pick(info, cur)
        if isinstance(p, int):
            if not isinstance(info, msgspec.inspect.ListType):
                return None
            info = info.item_type
        else:
            if isinstance(info, msgspec.inspect.StructType):
                f = next((f for f in info.fields if f.name == p), None)
                if f is None:
                    return None
                info = f.type
            elif isinstance(info, msgspec.inspect.DictType):
                info = info.value_type
            else:
                return None
        nxt = _value_at(cur, f".{p}" if isinstance(p, str) else f"[{p}]")
        cur = None if nxt is _MISSING else nxt
    return _pick(info, cur)


def _fields_at(doc: Any, path: str) -> list[str]:
    info = _type_at(doc, path)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.name for f in info.fields]
    return []


def _fmt_path(path: str) -> str:
    return path.lstrip(".") or "<root>"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_env_names(cfg: RunConfig) -> None:
    """Fields holding env var NAMES must be names; the offending value is not echoed."""
    checks: list[tuple[str, Any]] = [("target.api_endpoint.api_key_name", cfg.target.api_endpoint.api_key_name)]
    for sec in ("execution", "deployment"):
        obj = getattr(cfg, sec)
        for i, n in enumerate(getattr(obj, "env_names", []) or []):
            checks.append((f"{sec}.env_names[{i}]", n))
        tok = getattr(obj, "api_token_name", None)
        if tok is not None:
            checks.append((f"{sec}.api_token_name", tok))
    for where, name in checks:
        if name is not None and not _ENV_NAME.match(name):
            raise ConfigError(
                f"{where}: expected the NAME of an environment variable (letters, digits, _), "
                "not its value; the value given is not shown"
            )


def validate_run_config(doc: dict[str, Any]) -> RunConfig:
    """Convert a composed document (``defaults`` already consumed) into a RunConfig."""
    if not isinstance(doc, dict):
        raise ConfigError(f"config must be a mapping, got {type(doc).__name__}")
    doc = dict(doc)
    doc.pop("defaults", None)
    for sec in ("execution", "deployment", "target", "evaluation", "config"):
        if sec in doc and doc[sec] is not None and not isinstance(doc[sec], dict):
            raise ConfigError(f"{sec}: expected a mapping, got {_show(doc[sec])}")
        if sec in doc and doc[sec] is None:
            doc.pop(sec)
    execution = doc.get("execution")
    if isinstance(execution, dict):
        etype = execution.get("type", "local")
        if etype not in BUILTIN_EXECUTORS and etype != "custom":
            if not isinstance(etype, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", etype):
                raise ConfigError(
                    f"execution.type: got {etype!r}; expected one of {', '.join(BUILTIN_EXECUTORS)} "
                    "or a custom executor name (lowercase letters, digits, _)"
                )
            common = {k: execution[k] for k in ("output_dir", "pool", "max_redispatch") if k in execution}
            settings = {k: v for k, v in execution.items() if k not in common and k != "type"}
            doc["execution"] = {"type": "custom", "executor": etype, "settings": settings, **common}
    dep = doc.get("deployment")
    if isinstance(dep, dict) and dep.get("type", "none") not in DEPLOYMENT_TYPES:
        close = difflib.get_close_matches(str(dep.get("type")), DEPLOYMENT_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"deployment.type: got {dep.get('type')!r}; expected one of {', '.join(DEPLOYMENT_TYPES)}{hint}")
    if isinstance(dep, dict) and "type" not in dep:
        doc["deployment"] = {"type": "none", **dep}
    if isinstance(execution, dict) and "type" not in execution:
        doc["execution"] = {"type": "local", **doc["execution"]}
    try:
        cfg = msgspec.convert(doc, RunConfig, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), doc)) from None
    if isinstance(cfg.execution, CustomExecution) and cfg.execution.executor in BUILTIN_EXECUTORS:
        raise ConfigError(f"execution.executor: {cfg.execution.executor!r} is built in; use execution.type instead")
    _check_env_names(cfg)
    return cfg


def _explain(msg: str, doc: Any = None) -> str:
    """Turn a msgspec validation message into ``<path>: <what is wrong>, got <value>``."""
    m = _AT.match(msg)
    text, path = (m.group("msg"), m.group("path") or "") if m else (msg, "")
    unk = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unk:
        key = unk.group(1)
        valid = _fields_at(doc, path)
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        where = f"{_fmt_path(path)}.{key}" if path else key
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{where}: unknown key; {hint}valid keys: {', '.join(valid)}"
    miss = re.match(r"Object missing required field `([^`]+)`", text)
    if miss:
        where = f"{_fmt_path(path)}.{miss.group(1)}" if path else miss.group(1)
        return f"{where}: required field is missing"
    value = _value_at(doc, path) if doc is not None else _MISSING
    got = "" if value is _MISSING else f", got {_show(value)}"
    bad = re.match(r"Invalid (?:enum )?value '?([^']*)'?", text)
    if bad:
        info = _type_at(doc, path) if doc is not None else None
        allowed = _allowed(info, path)
        if allowed:
            return f"{_fmt_path(path)}: expected one of {', '.join(allowed)}{got.replace(', got', '; got')}"
        return f"{_fmt_path(path)}: invalid value{got}"
    text = text.replace("`", "")
    text = re.sub(r", got \w+$", "", text)
    if text.startswith("Expected "):
        text = "expected " + text[len("Expected ") :]
    elif text:
        text = text[0].lower() + text[1:]
    return f"{_fmt_path(path)}: {text or 'invalid value'}{got}"


def _allowed(info: Any, path: str) -> list[str]:
    if path.endswith(".type") and path.count(".") == 1:
        sec = path.strip(".").split(".")[0]
        if sec == "deployment":
            return list(DEPLOYMENT_TYPES)
        if sec == "execution":
            return [*BUILTIN_EXECUTORS, "<custom executor name>"]
    vals: list[str] = []
    infos = info.types if isinstance(info, msgspec.inspect.UnionType) else [info]
    for t in infos:
        if isinstance(t, msgspec.inspect.LiteralType):
            vals.extend(repr(v) if not isinstance(v, str) else v for v in t.values)
        elif isinstance(t, msgspec.inspect.IntType):
            vals.append("an integer")
        elif isinstance(t, msgspec.inspect.ListType):
            vals.append("a list")
        elif isinstance(t, msgspec.inspect.NoneType):
            vals.append("null")
    return vals
