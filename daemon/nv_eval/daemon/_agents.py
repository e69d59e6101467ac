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
    # (agent id, job id) -> monotonic time the agent last vouched for the job (event, or listed in a heartbeat)
    job_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def beat(self, hb: Heartbeat, now: float | None = None) -> bool:
        """Record a heartbeat; True when the agent is new to this daemon."""
        now = time.monotonic() if now is None else now
        new = hb.agent_id not in self.agents
        self.agents[hb.agent_id] = AgentInfo(hb, now)
        for jid in hb.running_jobs:
            self.job_seen[(hb.agent_id, jid)] = now
        return new

    def saw_job(self, agent_id: str, job_id: str, now: float | None = None) -> None:
        self.job_seen[(agent_id, job_id)] = time.monotonic() if now is None else now

    def forget_job(self, job_id: str) -> None:
        for key in [k for k in self.job_seen if k[1] == job_id]:
            del self.job_seen[key]

    def silent_for(self, agent_id: str, job_id: str, now: float | None = None) -> float:
        """Seconds since the agent last vouched for ``job_id`` (an event of the job, or the job
        listed in one of its heartbeats); at most the time since this daemon started."""
        now = time.monotonic() if now is None else now
        return now - max(self.started, self.job_seen.get((agent_id, job_id), self.started))

    def is_lost(self, agent_id: str, job_id: str, now: float | None = None) -> bool:
        return self.silent_for(agent_id, job_id, now) > self.timeout

    def prune(self, older_than_s: float, now: float | None = None) -> None:
        """Forget what was last heard longer ago than ``older_than_s`` (bounded memory)."""
        now = time.monotonic() if now is None else now
        for key in [k for k, t in self.job_seen.items() if now - t > older_than_s]:
            del self.job_seen[key]
        for aid in [a for a, info in self.agents.items() if now - info.last_seen > older_than_s]:
            del self.agents[aid]

    def agent_silent_for(self, agent_id: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        info = self.agents.get(agent_id)
        return now - max(self.started, info.last_seen if info else self.started)

    def alive(self, now: float | None = None) -> list[AgentInfo]:
        now = time.monotonic() if now is None else now
        return [a for a in self.agents.values() if now - a.last_seen <= self.timeout]
