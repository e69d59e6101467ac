"""Where the bus is: ``NV_EVAL_NATS_URL``, the user config file, or the embedded default.

Resolution order: env ``NV_EVAL_NATS_URL`` (prefix from ``NV_EVAL_PREFIX``), then
``$XDG_CONFIG_HOME/nv-eval/config.toml`` (keys ``nats_url``, ``prefix``), else the
embedded default under ``$NV_EVAL_HOME`` (or the platform's user data dir).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import UsageError

DEFAULT_PREFIX = "nveval"  # = nv_eval.protocol.DEFAULT_PREFIX (not imported: start-up time)


@dataclass(frozen=True)
class BusSettings:
    url: str | None  # None: embedded default, not started yet
    prefix: str
    source: str  # "env" | "config" | "embedded"


def home_dir() -> Path:
    """State of the embedded default (NATS storage, daemon and agent data, logs)."""
    env = os.environ.get("NV_EVAL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("nv-eval"))


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nv-eval" / "config.toml"


def _check_prefix(prefix: str, where: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise UsageError(f"{where}: prefix {prefix!r} must be letters, digits, _ or -")
    return prefix


def resolve() -> BusSettings:
    """The configured bus, or the embedded default (url None until started)."""
    env_prefix = os.environ.get("NV_EVAL_PREFIX")
    url = os.environ.get("NV_EVAL_NATS_URL")
    if url:
        return BusSettings(url, _check_prefix(env_prefix or DEFAULT_PREFIX, "NV_EVAL_PREFIX"), "env")
    cf = config_file()
    if cf.is_file():
        import tomllib

        try:
            doc = tomllib.loads(cf.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"{cf}: not valid TOML: {e}") from None
        unknown = sorted(set(doc) - {"nats_url", "prefix"})
        if unknown:
            raise UsageError(f"{cf}: unknown key {unknown[0]!r}; valid keys: nats_url, prefix")
        if doc.get("nats_url"):
            if not isinstance(doc["nats_url"], str):
                raise UsageError(f"{cf}: nats_url must be a string")
            prefix = env_prefix or doc.get("prefix") or DEFAULT_PREFIX
            return BusSettings(doc["nats_url"], _check_prefix(str(prefix), str(cf)), "config")
    return BusSettings(None, _check_prefix(env_prefix or DEFAULT_PREFIX, "NV_EVAL_PREFIX"), "embedded")
