"""The heartbeat registry: when a job's agent stops vouching for it."""

from __future__ import annotations

from nv_eval.daemon._agents import AgentTracker
from nv_eval.protocol import Heartbeat


def _hb(agent: str, jobs: list[str]) -> Heartbeat:
    return Heartbeat(
        agent_id=agent,
        executor="local",
        pool="default",
        hostname="h",
        capabilities=["process"],
        running_jobs=jobs,
        started_at=0.0,
        ts=0.0,
        interval_s=2.0,
    )


def test_grace_after_start_then_lost_without_news() -> None:
    t = AgentTracker(timeout=30, started=100.0)
    assert not t.is_lost("a", "j", now=129.0)  # a restarted daemon gives every agent one timeout
    assert t.is_lost("a", "j", now=131.0)


def test_heartbeat_listing_or_event_keeps_the_job() -> None:
    t = AgentTracker(timeout=30, started=0.0)
    assert t.beat(_hb("a", ["j1"]), now=100.0) is True
    assert t.beat(_hb("a", ["j1"]), now=120.0) is False
    assert not t.is_lost("a", "j1", now=149.0)
    # the agent is alive but does not list j2 and sends nothing about it: j2 is lost
    assert t.is_lost("a", "j2", now=149.0)
    assert t.agent_silent_for("a", now=149.0) == 29.0
    t.saw_job("a", "j2", now=140.0)
    assert not t.is_lost("a", "j2", now=160.0)
    # another agent listing the job does not vouch for the owner
    t.beat(_hb("zombie", ["j1"]), now=200.0)
    assert t.is_lost("a", "j1", now=200.0)


def test_forget_and_prune() -> None:
    t = AgentTracker(timeout=1, started=0.0)
    t.beat(_hb("a", ["j"]), now=10.0)
    t.forget_job("j")
    assert t.is_lost("a", "j", now=12.0)
    t.prune(5.0, now=100.0)
    assert t.agents == {} and t.job_seen == {}
