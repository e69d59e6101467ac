"""Request/reply messages of the daemon's API (``<prefix>.api.<verb>``) and its typed errors.

Every reply is either the verb's reply struct or :class:`ApiError` (tag field ``reply``).
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

from ._version import PROTOCOL_VERSION
from .config import RunConfig
from .jobs import InvocationRecord, JobRecord
from .tasks import TaskEntry

ErrorCode = Literal["not_found", "ambiguous", "bad_request", "conflict", "internal", "unsupported_version"]


class _Req(Struct, kw_only=True, omit_defaults=True):
    v: int = PROTOCOL_VERSION


class _Reply(Struct, kw_only=True, omit_defaults=True, tag_field="reply"):
    v: int = PROTOCOL_VERSION


class ApiError(_Reply, tag="error", kw_only=True):
    code: ErrorCode
    message: str


class RunRequest(_Req, kw_only=True):
    config: RunConfig
    tasks: list[TaskEntry]  # registry entries resolved by the client, one per evaluation task
    raw_config: dict[str, Any] = {}  # resolved config document, saved next to the results
    invocation_id: str | None = None


class RunReply(_Reply, tag="run", kw_only=True):
    invocation: InvocationRecord


class StatusRequest(_Req, kw_only=True):
    id: str  # invocation or job id, or a unique prefix of one


class StatusReply(_Reply, tag="status", kw_only=True):
    invocation: InvocationRecord
    job_id: str | None = None  # set when the id named one job


class KillRequest(_Req, kw_only=True):
    id: str


class KillReply(_Reply, tag="kill", kw_only=True):
    invocation_id: str
    killed: list[str]


class ResumeRequest(_Req, kw_only=True):
    id: str


class ResumeReply(_Reply, tag="resume", kw_only=True):
    invocation_id: str
    resubmitted: list[str]


class ListRunsRequest(_Req, kw_only=True):
    since: float | None = None  # unix time
    limit: int = 100


class ListRunsReply(_Reply, tag="list_runs", kw_only=True):
    invocations: list[InvocationRecord]


class ListTasksRequest(_Req, kw_only=True):
    pass


class ListTasksReply(_Reply, tag="list_tasks", kw_only=True):
    tasks: list[TaskEntry]


__all__ = [
    "ApiError",
    "ErrorCode",
    "JobRecord",
    "KillReply",
    "KillRequest",
    "ListRunsReply",
    "ListRunsRequest",
    "ListTasksReply",
    "ListTasksRequest",
    "ResumeReply",
    "ResumeRequest",
    "RunReply",
    "RunRequest",
    "StatusReply",
    "StatusRequest",
]
