"""Hydra-compatible config composition: ``--config-dir``/``--config-name``, defaults lists, overrides.

The user's config dir comes first in the search path, then the built-in groups shipped in
``nv_eval/client/conf`` (``execution/``, ``deployment/``), so a user's dir can add or
override groups. Overrides follow Hydra's grammar (``key=v``, ``+key=v``, ``++key=v``,
``~key``, typed values). Every Hydra/OmegaConf/YAML failure becomes a one-line
:class:`ConfigCompositionError`. The composed document is validated into a
:class:`RunConfig`, its tasks resolved against the registry (plus the config dir's
``tasks.toml``) and planned, so bad input is rejected before anything starts.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nv_eval.protocol import (
    ConfigError,
    JobSpec,
    PlanError,
    RegistryError,
    RunConfig,
    SlurmExecution,
    TaskEntry,
    load_registry,
    plan_invocation,
    resolve_task,
    validate_run_config,
)

from ._errors import ConfigCompositionError

BUILTIN_CONF_DIR = Path(__file__).resolve().parent / "conf"
DRY_RUN_ID = "0" * 16


@dataclass
class ComposedRun:
    """A composed, validated and resolved run configuration."""

    doc: dict[str, Any]  # the resolved document (defaults consumed, output_dir absolute)
    config: RunConfig
    tasks: list[TaskEntry]  # registry entry per evaluation task, in order
    config_dir: Path
    config_name: str
    registry: dict[str, TaskEntry] = field(default_factory=dict)

    def plan(self, invocation_id: str = DRY_RUN_ID) -> list[JobSpec]:
        try:
            return plan_invocation(invocation_id, self.config, self.tasks)
        except PlanError as e:
            raise ConfigCompositionError(str(e)) from None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _split_name(config_dir: str | os.PathLike[str] | None, config_name: str) -> tuple[Path, str]:
    if not config_name or not config_name.strip():
        raise ConfigCompositionError("--config-name: must name a config file (e.g. local_llama_3_1_8b_instruct)")
    name = config_name.strip()
    if config_dir is None:
        p = Path(name if name.endswith((".yaml", ".yml")) else name + ".yaml")
        return (p.parent if str(p.parent) else Path(".")).resolve(), p.stem
    d = Path(config_dir).expanduser()
    if not d.is_dir():
        raise ConfigCompositionError(f"--config-dir: {str(config_dir)!r} is not a directory")
    for ext in (".yaml", ".yml"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return d.resolve(), name


def _available(config_dir: Path) -> str:
    names = sorted(p.stem for p in config_dir.glob("*.yaml"))
    return ", ".join(names) if names else "none"


def _translate(e: Exception, config_dir: Path, name: str) -> ConfigCompositionError:
    msg = str(e)
    cause = e.__cause__
    m = re.search(r"Cannot find primary config '([^']+)'", msg)
    if m:
        return ConfigCompositionError(
            f"--config-name: no config {m.group(1)!r} in {config_dir} (available: {_available(config_dir)})"
        )
    m = re.search(r"Could not find '([^/']+)/([^']+)'.*?Available options in '[^']+':(.*?)Config search path", msg, re.S)
    if m:
        opts = ", ".join(m.group(3).split())
        return ConfigCompositionError(f"{m.group(1)}: no config group option {m.group(2)!r}; available: {opts}")
    m = re.search(r"Could not find '([^']+)'", msg)
    if m:
        return ConfigCompositionError(f"defaults: config {m.group(1)!r} not found in {config_dir} or the built-in groups")
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        key = m.group(1)
        full = re.search(r"full_key: (\S+)", str(cause or ""))
        if full and full.group(1) != key:
            return ConfigCompositionError(
                f"-o {key}=...: {full.group(1)!r} is not in the config (a mapping merges into the existing one); "
                f"use ++{key}=VALUE to set it"
            )
        return ConfigCompositionError(f"-o {key}=...: key {key!r} is not in the config; use +{key}=VALUE to add it")
    m = re.search(r"Could not append to config. An item is already at '([^']+)'", msg)
    if m:
        key = m.group(1)
        return ConfigCompositionError(f"-o +{key}=...: {key!r} already exists; use {key}=VALUE or ++{key}=VALUE")
    m = re.search(r"Could not delete from config. '([^']+)' does not exist", msg)
    if m:
        return ConfigCompositionError(f"-o ~{m.group(1)}: {m.group(1)!r} is not in the config")
    if type(e).__name__ == "OverrideParseException":
        return ConfigCompositionError(f"-o: cannot parse override: {_one_line(msg.split('See https')[0])}")
    detail = _one_line(msg.split("Config search path")[0] or repr(e))
    if cause is not None and str(cause):
        detail = f"{detail} ({_one_line(str(cause).splitlines()[0], 150)})"
    return ConfigCompositionError(f"config {name!r}: {detail}")


def compose_document(
    config_name: str, config_dir: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], Path, str]:
    """Compose the YAML document (defaults lists, overrides) into a plain dict."""
    cdir, name = _split_name(config_dir, config_name)
    if not (cdir / f"{name}.yaml").is_file() and not (cdir / f"{name}.yml").is_file():
        raise ConfigCompositionError(f"--config-name: no config {name!r} in {cdir} (available: {_available(cdir)})")
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0].strip()
        if not o.strip():
            raise ConfigCompositionError("-o: empty override; expected key=value, +key=value, ++key=value or ~key")
        if key == "hydra" or key.startswith("hydra."):
            raise ConfigCompositionError(f"-o {o}: hydra.* settings cannot be overridden here")
        if "=" not in o and not o.startswith("~"):
            raise ConfigCompositionError(f"-o {o}: expected key=value, +key=value, ++key=value or ~key")

    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except Exception as e:  # noqa: BLE001
            reason = _one_line(str(e).split("See https")[0], 150)
            raise ConfigCompositionError(f"-o {o}: not a valid override ({reason})") from None

    logging.getLogger("hydra").setLevel(logging.ERROR)
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with initialize_config_dir(config_dir=str(cdir), version_base=None):
                cfg = compose(
                    config_name=name,
                    overrides=[f"hydra.searchpath=[file://{BUILTIN_CONF_DIR}]", *overrides],
                )
                doc = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - every composition failure becomes one line
        raise _translate(e, cdir, name) from None
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(doc, dict):
        raise ConfigCompositionError(f"config {name!r}: expected a mapping at the top level")
    return doc, cdir, name  # type: ignore[return-value]


def _absolutize(doc: dict[str, Any], cfg: RunConfig, cwd: Path) -> RunConfig:
    ex = cfg.execution
    if not ex.output_dir.strip():
        raise ConfigCompositionError("execution.output_dir: must not be empty")
    if isinstance(ex, SlurmExecution) and ex.hostname:
        return cfg  # remote mode: the path lives on the cluster
    out = os.path.abspath(os.path.join(cwd, os.path.expanduser(ex.output_dir)))
    if isinstance(doc.get("execution"), dict):
        doc["execution"]["output_dir"] = out
    else:
        doc["execution"] = {"output_dir": out}
    return msgspec.structs.replace(cfg, execution=msgspec.structs.replace(ex, output_dir=out))


def compose_run(
    config_name: str,
    config_dir: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cwd: str | os.PathLike[str] | None = None,
) -> ComposedRun:
    """Compose, validate, resolve tasks and check the plan; raise ConfigCompositionError on bad input."""
    doc, cdir, name = compose_document(config_name, config_dir, overrides)
    try:
        cfg = validate_run_config(doc)
    except ConfigError as e:
        raise ConfigCompositionError(str(e)) from None
    cfg = _absolutize(doc, cfg, Path(cwd) if cwd else Path.cwd())
    try:
        registry = load_registry([cdir / "tasks.toml"])
        entries = [resolve_task(registry, t.name) for t in cfg.evaluation.tasks]
    except RegistryError as e:
        raise ConfigCompositionError(f"evaluation.tasks: {e}") from None
    run = ComposedRun(doc=doc, config=cfg, tasks=entries, config_dir=cdir, config_name=name, registry=registry)
    run.plan()  # raises on what the daemon would refuse
    return run
