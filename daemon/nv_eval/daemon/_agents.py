"""Agent registry fed by heartbeats: who is alive, what it runs, when it was last heard from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nv_eval.protocol import Heartbeat


@dataclass
class AgentInfo:
    heartbeat: Heartbeat
    last_seen: float  # time.monotonic() of the last heartbeat


@dataclass
class AgentTracker:
    """In-memory view of the agents; after a daemon restart every agent gets a fresh grace period."""

    timeout: float
    started: float = field(default_factory=time.monotonic)
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    job_seen: dict[str, float] = field(default_factory=dict)  # job id -> monotonic time of its last agent event

    def beat(self, hb: Heartbeat, now: float | None = None) -> bool:
        """Record a heartbeat; True when the agent is new to this daemon."""
        now = time.monotonic() if now is None else now
        new = hb.agent_id not in self.agents
        self.agents[hb.agent_id] = AgentInfo(hb, now)
        for jid in hb.running_jobs:
            self.job_seen[jid] = now
        return new

    def saw_job(self, job_id: str, now: float | None = None) -> None:
        self.job_seen[job_id] = time.monotonic() if now is None else now

    def forget_job(self, job_id: str) -> None:
        self.job_seen.pop(job_id, None)

    def silent_for(self, agent_id: str, job_id: str, now: float | None = None) -> float:
        """Seconds since anything was heard from ``agent_id`` about ``job_id`` (or from the agent at all)."""
        now = time.monotonic() if now is None else now
        seen = self.started
        info = self.agents.get(agent_id)
        if info is not None:
            seen = max(seen, info.last_seen)
        seen = max(seen, self.job_seen.get(job_id, seen))
        return now - seen

    def is_lost(self, agent_id: str, job_id: str, now: float | None = None) -> bool:
        return self.silent_for(agent_id, job_id, now) > self.timeout

    def alive(self, now: float | None = None) -> list[AgentInfo]:
        now = time.monotonic() if now is None else now
        return [a for a in self.agents.values() if now - a.last_seen <= self.timeout]
