"""Validating a composed config document into :class:`RunConfig` with one-line errors.

Errors name the field path, what was given and what is allowed; unknown keys list the
valid ones and the closest match.
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


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


def _fields_at(path: str) -> list[str]:
    """Valid field names of the struct found at a msgspec path like ``.execution``."""
    t: Any = RunConfig
    for part in [p for p in re.split(r"\.|\[\d+\]", path) if p]:
        t = _resolve(t, part)
        if t is None:
            return []
    return _struct_fields(t)


def _struct_fields(t: Any) -> list[str]:
    info = msgspec.inspect.type_info(t)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.name for f in info.fields]
    return []


def _resolve(t: Any, part: str) -> Any:
    info = msgspec.inspect.type_info(t)
    if isinstance(info, msgspec.inspect.UnionType):
        for sub in info.types:
            if isinstance(sub, msgspec.inspect.StructType):
                r = _resolve(sub.cls, part)
                if r is not None:
                    return r
        return None
    if isinstance(info, msgspec.inspect.ListType):
        return _resolve_type(info.item_type, part)
    if isinstance(info, msgspec.inspect.StructType):
        for f in info.fields:
            if f.name == part:
                return _unwrap(f.type)
    return None


def _resolve_type(info: Any, part: str) -> Any:
    if isinstance(info, msgspec.inspect.StructType):
        return _resolve(info.cls, part)
    return None


def _unwrap(info: Any) -> Any:
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [s for s in info.types if isinstance(s, msgspec.inspect.StructType)]
        if structs:
            return structs[0].cls
    if isinstance(info, msgspec.inspect.ListType) and isinstance(info.item_type, msgspec.inspect.StructType):
        return info.item_type.cls
    return None


def _fmt_path(path: str) -> str:
    return path.lstrip(".") or "<root>"


def validate_run_config(doc: dict[str, Any]) -> RunConfig:
    """Convert a composed document (``defaults`` already consumed) into a RunConfig."""
    if not isinstance(doc, dict):
        raise ConfigError(f"config must be a mapping, got {type(doc).__name__}")
    doc = dict(doc)
    doc.pop("defaults", None)
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
        raise ConfigError(_explain(str(e))) from None
    if isinstance(cfg.execution, CustomExecution) and cfg.execution.executor in BUILTIN_EXECUTORS:
        raise ConfigError(f"execution.executor: {cfg.execution.executor!r} is built in; use execution.type instead")
    return cfg


def _explain(msg: str) -> str:
    m = _AT.match(msg)
    text, path = (m.group("msg"), m.group("path") or "") if m else (msg, "")
    unk = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unk:
        key = unk.group(1)
        valid = _fields_at(path)
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        where = f"{_fmt_path(path)}.{key}" if path else key
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{where}: unknown key; {hint}valid keys: {', '.join(valid)}"
    miss = re.match(r"Object missing required field `([^`]+)`", text)
    if miss:
        return f"{_fmt_path(path)}.{miss.group(1)}: required field is missing"
    tag = re.match(r"Invalid value '([^']*)'", text)
    if tag and path.endswith(".type"):
        return f"{_fmt_path(path)}: got {tag.group(1)!r}; not an allowed type"
    return f"{_fmt_path(path)}: {text[0].lower() + text[1:] if text else 'invalid value'}"
