"""End to end on real processes: nats-server, ``python -m nv_eval.daemon``, ``python -m nv_eval.agents``
(local process runtime running the stand-in harness as real subprocesses).

The daemon is SIGKILLed while an invocation runs and restarted: the invocation completes with its
full state and no event is lost or duplicated. A second invocation is killed while it runs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
from nv_eval.protocol import (
    GlobalEvalConfig,
    KillReply,
    KillRequest,
    Metric,
    RunReply,
    StatusEvent,
    StatusReply,
    StatusRequest,
    TaskParams,
)

from tests.integration._agent_helpers import pid_alive, start_agent_process
from tests.integration.test_daemon_helpers import (
    call,
    connect,
    event_history,
    run_request,
    sigkill,
    start_daemon_process,
    wait_for,
)
from tests.integration.test_daemon_restart import _wait_ready

pytestmark = pytest.mark.timeout(180)


def _request(out: Path, tasks: list[str], steps: int, step_s: float):  # type: ignore[no-untyped-def]
    req = run_request(out, tasks)
    req.config.config = GlobalEvalConfig(params=TaskParams(extra={"steps": steps, "step_s": step_s}))
    return req


async def _status(nc, prefix: str, inv: str) -> StatusReply:  # type: ignore[no-untyped-def]
    st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
    assert isinstance(st, StatusReply), st
    return st


async def test_daemon_sigkill_mid_invocation_with_real_agent(nats_url: str, prefix: str, tmp_path: Path) -> None:
    dlog = tmp_path / "daemon.log"
    daemon = start_daemon_process(nats_url, prefix, tmp_path / "daemon", dlog, "--heartbeat-timeout", "10")
    agent = start_agent_process(nats_url, prefix, tmp_path / "agent", agent_id="agent-e2e", max_jobs=4)
    try:
        async with connect(nats_url) as nc:
            await _wait_ready(nc, prefix, daemon, dlog)
            tasks = ["arc_easy", "hellaswag", "gsm8k"]
            steps = 40
            t0 = time.monotonic()
            t_submit = time.time()
            rep = await call(nc, prefix, "run", _request(tmp_path / "out", tasks, steps, 0.05), RunReply)
            assert isinstance(rep, RunReply), rep
            inv = rep.invocation.invocation_id
            assert (tmp_path / "out" / inv / "config.yaml").is_file()

            async def some_progress() -> bool:
                st = await _status(nc, prefix, inv)
                return all(j.progress is not None and j.progress.done >= 5 for j in st.invocation.jobs)

            await wait_for(some_progress, 30)
            submit_to_progress = time.monotonic() - t0
            sigkill(daemon)
            await anyio.sleep(0.5)  # events keep flowing into JetStream while the daemon is down
            daemon = start_daemon_process(nats_url, prefix, tmp_path / "daemon", dlog, "--heartbeat-timeout", "10")
            await _wait_ready(nc, prefix, daemon, dlog)

            async def finished() -> StatusReply | None:
                st = await _status(nc, prefix, inv)
                return st if st.invocation.state not in ("pending", "running") else None

            st = await wait_for(finished, 60)
            assert st.invocation.state == "succeeded", st
            hist = await event_history(nc, prefix, inv)
            ids = Counter(h for _, h in hist)
            assert all(n == 1 for n in ids.values())
            for job in st.invocation.jobs:
                assert job.agent_id == "agent-e2e" and job.exit_code in (0, None)
                assert job.progress is not None and job.progress.done == job.progress.total == steps
                assert job.metrics == {"acc": Metric(0.5, 0.1)}
                mine = [ev for ev, _ in hist if ev.job_id == job.job_id]
                assert job.last_seq == max(ev.seq for ev in mine)
                states = [ev.state for ev in mine if isinstance(ev, StatusEvent)]
                assert states[:2] == ["pending", "dispatched"] and states[-1] == "succeeded"
                assert states.count("running") == 1
                agent_seqs = [ev.seq for ev in mine if ev.source == "agent-e2e"]
                assert agent_seqs == sorted(agent_seqs)  # in order per job
            assert submit_to_progress < 20
            first_running = min(
                ev.ts for ev, _ in hist if isinstance(ev, StatusEvent) and ev.state == "running"
            )
            first_dispatched = min(
                ev.ts for ev, _ in hist if isinstance(ev, StatusEvent) and ev.state == "dispatched"
            )
            print(
                f"submit-to-running: {(first_running - t_submit) * 1000:.0f} ms "
                f"(dispatched after {(first_dispatched - t_submit) * 1000:.0f} ms)"
            )
            assert first_running - t_submit < 5  # the target is 500 ms (benchmarks/); here only a sanity bound

            # a second invocation, killed while it runs: the agent stops the harness process
            rep2 = await call(nc, prefix, "run", _request(tmp_path / "out", ["mmlu"], 400, 0.05), RunReply)
            inv2 = rep2.invocation.invocation_id

            async def running() -> bool:
                (j,) = (await _status(nc, prefix, inv2)).invocation.jobs
                return j.state == "running" and j.progress is not None  # the harness process is up

            await wait_for(running, 30)
            task_dir = Path(rep2.invocation.jobs[0].task_dir)
            pid = int((task_dir / "launches.txt").read_text().split()[0])
            assert pid_alive(pid)
            t_kill = time.monotonic()
            kr = await call(nc, prefix, "kill", KillRequest(id=inv2), KillReply)
            assert isinstance(kr, KillReply) and kr.killed == [f"{inv2}.0"]

            async def killed() -> bool:
                return [j.state for j in (await _status(nc, prefix, inv2)).invocation.jobs] == ["killed"]

            await wait_for(killed, 10)
            with anyio.fail_after(5):
                while pid_alive(pid):
                    await anyio.sleep(0.05)
            assert time.monotonic() - t_kill < 5
            job = (await _status(nc, prefix, inv2)).invocation.jobs[0]
            assert job.agent_id == "agent-e2e"  # the agent confirmed and reported the kill itself
    finally:
        for p in (agent, daemon):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except Exception:  # noqa: BLE001
                    sigkill(p)


async def test_real_agent_heartbeats_keep_quiet_jobs_alive(nats_url: str, prefix: str, tmp_path: Path) -> None:
    """Events 1.5 s apart with a 1 s timeout: only the agent's heartbeats (listing the job) keep it owned."""
    dlog = tmp_path / "daemon.log"
    daemon = start_daemon_process(nats_url, prefix, tmp_path / "daemon", dlog, "--heartbeat-timeout", "1")
    agent = start_agent_process(nats_url, prefix, tmp_path / "agent", agent_id="agent-quiet")
    try:
        async with connect(nats_url) as nc:
            await _wait_ready(nc, prefix, daemon, dlog)
            rep = await call(nc, prefix, "run", _request(tmp_path / "out", ["arc_easy"], 3, 1.5), RunReply)
            inv = rep.invocation.invocation_id

            async def finished() -> StatusReply | None:
                st = await _status(nc, prefix, inv)
                return st if st.invocation.state not in ("pending", "running") else None

            st = await wait_for(finished, 30)
            (job,) = st.invocation.jobs
            assert (job.state, job.attempt, job.agent_id) == ("succeeded", 1, "agent-quiet"), job
            hist = await event_history(nc, prefix, inv)
            assert not [ev for ev, _ in hist if isinstance(ev, StatusEvent) and ev.state == "lost"]
    finally:
        for p in (agent, daemon):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except Exception:  # noqa: BLE001
                    sigkill(p)
