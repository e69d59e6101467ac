"""Loading the task registry (built-in ``tasks.toml`` plus user files) and resolving names."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import msgspec

from .tasks import TaskEntry


class RegistryError(ValueError):
    """Unknown task name or malformed registry file (one-line message)."""


def _parse(text: str, origin: str) -> dict[str, TaskEntry]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{origin}: not valid TOML: {e}") from None
    tasks = doc.get("tasks", {})
    if not isinstance(tasks, dict):
        raise RegistryError(f"{origin}: [tasks] must be a table of task tables")
    out: dict[str, TaskEntry] = {}
    for name, body in tasks.items():
        if not isinstance(body, dict):
            raise RegistryError(f"{origin}: tasks.{name} must be a table")
        try:
            out[name] = msgspec.convert({"name": name, **body}, TaskEntry)
        except msgspec.ValidationError as e:
            raise RegistryError(f"{origin}: tasks.{name}: {e}") from None
    return out


def load_registry(extra_files: Iterable[str | Path] = ()) -> dict[str, TaskEntry]:
    """Built-in entries, then each extra file (later files override earlier entries)."""
    text = resources.files(__package__).joinpath("tasks.toml").read_text(encoding="utf-8")
    reg = _parse(text, "built-in tasks.toml")
    for f in extra_files:
        p = Path(f)
        if not p.is_file():
            continue
        reg.update(_parse(p.read_text(encoding="utf-8"), str(p)))
    return reg


def resolve_task(registry: dict[str, TaskEntry], name: str) -> TaskEntry:
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known tasks: {', '.join(sorted(registry))}"
        raise RegistryError(f"unknown task {name!r}{hint}") from None
