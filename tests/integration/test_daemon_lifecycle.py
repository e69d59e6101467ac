"""Lost agents, kill and resume against the real daemon on a real nats-server."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from nv_eval.protocol import (
    CancelJob,
    ControlReply,
    KillReply,
    KillRequest,
    ResumeReply,
    ResumeRequest,
    RunReply,
    StatusEvent,
    StatusReply,
    StatusRequest,
    Subjects,
    decode,
    encode,
)

from tests.integration.test_daemon_helpers import (
    FakeAgentIO,
    call,
    connect,
    daemon,
    event_history,
    run_request,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


async def _states(nc, prefix: str, inv_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    st = await call(nc, prefix, "status", StatusRequest(id=inv_id), StatusReply)
    return [j.state for j in st.invocation.jobs]


async def test_lost_agent_jobs_are_redispatched_then_failed(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data", heartbeat_timeout=1.0), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy", "mmlu"], max_redispatch=1), RunReply)
        inv_id = rep.invocation.invocation_id
        agent = FakeAgentIO(nc, prefix, "agent-x")
        specs = sorted(await agent.take_jobs(2), key=lambda s: s.index)
        for s in specs:
            await agent.status(s, "running")
        # a live agent keeps its jobs: 2 s of heartbeats (twice the timeout) and nothing is lost
        for _ in range(10):
            await agent.heartbeat([s.job_id for s in specs])
            await anyio.sleep(0.2)
        assert await _states(nc, prefix, inv_id) == ["running", "running"]
        # job 1 finishes; then the agent goes silent: only job 0 is lost and re-dispatched as attempt 2
        await agent.status(specs[1], "succeeded", exit_code=0)

        async def redispatched() -> bool:
            return await _states(nc, prefix, inv_id) == ["dispatched", "succeeded"]

        await wait_for(redispatched, 10)
        again = await agent.take_jobs(1)
        assert [(s.job_id, s.attempt) for s in again] == [(specs[0].job_id, 2)]
        st = await call(nc, prefix, "status", StatusRequest(id=specs[0].job_id), StatusReply)
        assert st.invocation.jobs[0].attempt == 2 and st.invocation.jobs[0].agent_id is None
        # the lost agent comes back and reports its old attempt: ignored
        await agent.status(specs[0], "succeeded")
        # a new agent runs attempt 2 and goes silent too: no re-dispatch left -> failed (infrastructure)
        agent2 = FakeAgentIO(nc, prefix, "agent-y")
        await agent2.status(again[0], "running")

        async def failed() -> bool:
            return await _states(nc, prefix, inv_id) == ["failed", "succeeded"]

        await wait_for(failed, 10)
        job = (await call(nc, prefix, "status", StatusRequest(id=inv_id), StatusReply)).invocation.jobs[0]
        assert job.failure_kind == "infrastructure" and "agent-y" in (job.message or "")
        daemon_states = [
            (ev.state, ev.attempt)
            for ev, _ in await event_history(nc, prefix, inv_id)
            if isinstance(ev, StatusEvent) and ev.source == "daemon" and ev.job_id == specs[0].job_id
        ]
        assert daemon_states == [("pending", 1), ("dispatched", 1), ("lost", 1), ("dispatched", 2), ("lost", 2), ("failed", 2)]


async def test_kill_before_pickup_and_with_agent_then_resume(nats_url: str, prefix: str, tmp_path: Path) -> None:
    subjects = Subjects(prefix)
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        # invocation 1: nobody picks its jobs up; kill marks them killed at once and writes cancel keys
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy", "hellaswag"]), RunReply)
        inv1 = rep.invocation.invocation_id
        await wait_for(lambda: _is(nc, prefix, inv1, ["dispatched", "dispatched"]), 5)
        kr = await call(nc, prefix, "kill", KillRequest(id=inv1), KillReply)
        assert isinstance(kr, KillReply) and kr.killed == [f"{inv1}.0", f"{inv1}.1"]
        assert await _states(nc, prefix, inv1) == ["killed", "killed"]
        kv = await nc.jetstream().key_value(subjects.cancel_bucket)
        assert (await kv.get(f"{inv1}.0")).value == b"killed"
        again = await call(nc, prefix, "kill", KillRequest(id=inv1), KillReply)
        assert isinstance(again, KillReply) and again.killed == []

        # invocation 2: an agent owns job 0; kill goes to the agent on its control subject
        agent = FakeAgentIO(nc, prefix, "agent-k")
        await agent.take_jobs(2)  # drain invocation 1's jobs, as an agent seeing the cancel keys would skip them
        rep2 = await call(nc, prefix, "run", run_request(tmp_path / "out", ["gsm8k"]), RunReply)
        inv2 = rep2.invocation.invocation_id
        (spec,) = await agent.take_jobs(1)
        await agent.status(spec, "running")
        await wait_for(lambda: _is(nc, prefix, inv2, ["running"]), 5)
        cancels: list[CancelJob] = []

        async def on_control(msg) -> None:  # type: ignore[no-untyped-def]
            req = decode(msg.data, CancelJob)
            cancels.append(req)
            await msg.respond(encode(ControlReply(ok=True)))
            await agent.status(spec, "killed", message="terminated")

        sub = await nc.subscribe(subjects.control("agent-k"), cb=on_control)
        kr2 = await call(nc, prefix, "kill", KillRequest(id=inv2[:8]), KillReply)
        assert kr2.killed == [spec.job_id]
        assert [c.job_id for c in cancels] == [spec.job_id]
        await wait_for(lambda: _is(nc, prefix, inv2, ["killed"]), 5)
        job = (await call(nc, prefix, "status", StatusRequest(id=inv2), StatusReply)).invocation.jobs[0]
        assert job.agent_id == "agent-k"  # the agent's own killed event, not the daemon's fallback
        await sub.unsubscribe()

        # resume invocation 1: both jobs go out again as attempt 2 and their cancel keys are gone
        rr = await call(nc, prefix, "resume", ResumeRequest(id=inv1), ResumeReply)
        assert isinstance(rr, ResumeReply) and rr.resubmitted == [f"{inv1}.0", f"{inv1}.1"]
        respecs = sorted(await agent.take_jobs(2), key=lambda s: s.index)
        assert [(s.job_id, s.attempt) for s in respecs] == [(f"{inv1}.0", 2), (f"{inv1}.1", 2)]
        assert await _states(nc, prefix, inv1) == ["dispatched", "dispatched"]
        for s in respecs:
            entry = await _kv_entry(kv, s.job_id)
            assert entry is None
        await agent.status(respecs[0], "succeeded")
        await wait_for(lambda: _is(nc, prefix, inv1, ["succeeded", "dispatched"]), 5)
        # resuming again only re-sends what did not succeed... and a dispatched job is not resumable
        rr2 = await call(nc, prefix, "resume", ResumeRequest(id=inv1), ResumeReply)
        assert rr2.resubmitted == []


async def test_kill_when_agent_does_not_answer(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"]), RunReply)
        inv = rep.invocation.invocation_id
        agent = FakeAgentIO(nc, prefix, "agent-gone")
        (spec,) = await agent.take_jobs(1)
        await agent.status(spec, "running")
        await wait_for(lambda: _is(nc, prefix, inv, ["running"]), 5)
        kr = await call(nc, prefix, "kill", KillRequest(id=inv), KillReply)  # no responder: fails fast
        assert kr.killed == [spec.job_id]
        job = (await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)).invocation.jobs[0]
        assert job.state == "killed" and "agent-gone did not confirm" in (job.message or "")


async def _is(nc, prefix: str, inv: str, states: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return await _states(nc, prefix, inv) == states


async def _kv_entry(kv, key: str):  # type: ignore[no-untyped-def]
    import nats.js.errors

    try:
        return await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None


async def test_job_lost_when_its_live_agent_stops_reporting_it(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data", heartbeat_timeout=1.0), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"], max_redispatch=0), RunReply)
        inv = rep.invocation.invocation_id
        agent = FakeAgentIO(nc, prefix, "agent-amnesia")
        (spec,) = await agent.take_jobs(1)
        await agent.status(spec, "running")
        # the agent keeps beating but (e.g. after losing its local state) no longer lists the job
        with anyio.fail_after(10):
            while await _states(nc, prefix, inv) != ["failed"]:
                await agent.heartbeat([])
                await anyio.sleep(0.2)
        job = (await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)).invocation.jobs[0]
        assert job.failure_kind == "infrastructure"
        assert "alive but has not reported the job" in (job.message or "")


async def test_jobs_nobody_picked_up_stay_dispatched(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data", heartbeat_timeout=0.5), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"], max_redispatch=0), RunReply)
        inv = rep.invocation.invocation_id
        await wait_for(lambda: _is(nc, prefix, inv, ["dispatched"]), 5)
        await anyio.sleep(2.0)  # four timeouts with no agent at all
        assert await _states(nc, prefix, inv) == ["dispatched"]
        # an agent shows up later and takes it: still attempt 1
        (spec,) = await FakeAgentIO(nc, prefix, "late").take_jobs(1)
        assert spec.attempt == 1
