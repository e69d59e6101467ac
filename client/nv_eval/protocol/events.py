"""Events emitted by agents (and the daemon): one tagged union, JSON on the wire.

Every event carries a per-job monotonically increasing ``seq`` and a ``msg_id``
(``<job_id>:<seq>``, also sent as the ``Nats-Msg-Id`` header) so subscribers can replay
from any point and duplicates are dropped.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from ._version import PROTOCOL_VERSION
from .jobs import FailureKind, JobState
from .results import Results


class _EventBase(Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    invocation_id: str
    job_id: str
    seq: int
    ts: float
    source: str  # agent id, or "daemon"
    msg_id: str = ""
    v: int = PROTOCOL_VERSION


class StatusEvent(_EventBase, tag="status", kw_only=True):
    state: JobState
    message: str | None = None
    failure_kind: FailureKind | None = None
    exit_code: int | None = None
    attempt: int = 1


class ProgressEvent(_EventBase, tag="progress", kw_only=True):
    done: int
    total: int
    rps: float | None = None
    eta_s: float | None = None


class LogEvent(_EventBase, tag="log", kw_only=True):
    stream: Literal["stdout", "stderr", "deployment", "agent"] = "stdout"
    lines: list[str]


class ResultEvent(_EventBase, tag="result", kw_only=True):
    results: Results


class DeploymentEvent(_EventBase, tag="deployment", kw_only=True):
    deployment_id: str
    state: Literal["starting", "loading", "ready", "failed", "stopped"]
    url: str | None = None
    message: str | None = None
    last_logs: list[str] = []


Event = StatusEvent | ProgressEvent | LogEvent | ResultEvent | DeploymentEvent


def event_msg_id(job_id: str, seq: int) -> str:
    return f"{job_id}:{seq}"
