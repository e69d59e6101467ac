"""Agent heartbeats and the control messages the daemon sends to one agent."""

from __future__ import annotations

from msgspec import Struct

from ._version import PROTOCOL_VERSION


class Heartbeat(Struct, kw_only=True):
    agent_id: str
    executor: str
    pool: str
    hostname: str
    capabilities: list[str]  # e.g. ["docker", "process", "gpu"]
    running_jobs: list[str]
    started_at: float
    ts: float
    interval_s: float
    version: str = "0"
    v: int = PROTOCOL_VERSION


class CancelJob(Struct, kw_only=True, tag="cancel", tag_field="op"):
    job_id: str
    reason: str = "killed by user"


ControlRequest = CancelJob


class ControlReply(Struct, kw_only=True, omit_defaults=True):
    ok: bool
    error: str | None = None
