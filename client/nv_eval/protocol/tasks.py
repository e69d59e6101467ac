"""Task registry entries (the data in ``tasks.toml``) as typed structures."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

from .config import EndpointType, TaskParams

HarnessKind = Literal["builtin", "lm-eval", "nemo-evaluator"]


class TaskEntry(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    harness: HarnessKind = "builtin"
    image: str = "nv-eval/harness:latest"
    endpoint_types: list[EndpointType] = field(default_factory=lambda: ["completions", "chat"])
    capabilities: list[str] = []  # e.g. "logprobs" (needed in completions mode)
    description: str = ""
    harness_task: str | None = None  # the task's name inside an external harness
    params: TaskParams = field(default_factory=TaskParams)
