"""nv-eval client: CLI, config composition, async SDK, exporters.

Public API (heavy dependencies are imported lazily on first use)::

    from nv_eval.client import Client, compose_run, export_invocation
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ApiCallError,
    BusUnreachableError,
    ConfigCompositionError,
    NotFoundError,
    NvEvalError,
    UsageError,
)

if TYPE_CHECKING:
    from ._compose import ComposedRun, compose_document, compose_run
    from .exporters import collect_results, export_invocation, to_csv, to_json
    from .sdk import Client

_LAZY = {
    "Client": "sdk",
    "ComposedRun": "_compose",
    "compose_run": "_compose",
    "compose_document": "_compose",
    "collect_results": "exporters",
    "export_invocation": "exporters",
    "to_csv": "exporters",
    "to_json": "exporters",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'nv_eval.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)


__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ApiCallError",
    "BusUnreachableError",
    "Client",
    "ComposedRun",
    "ConfigCompositionError",
    "NotFoundError",
    "NvEvalError",
    "UsageError",
    "collect_results",
    "compose_document",
    "compose_run",
    "export_invocation",
    "to_csv",
    "to_json",
]
