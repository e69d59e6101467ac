"""Restart safety: SIGKILL the daemon process while events flow and while it dispatches; restart it;
the state is complete and nothing is lost or duplicated."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import anyio
import nats
import pytest
from nv_eval.protocol import (
    ApiError,
    ListTasksReply,
    ListTasksRequest,
    Metric,
    ProgressEvent,
    ResultEvent,
    Results,
    RunReply,
    StatusEvent,
    StatusReply,
    StatusRequest,
    Subjects,
)

from tests.integration.test_daemon_helpers import (
    FakeAgentIO,
    call,
    connect,
    event_history,
    run_request,
    sigkill,
    start_daemon_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


async def _wait_ready(nc: nats.aio.client.Client, prefix: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async def answered() -> bool:
        assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{_tail(log)}"
        try:
            rep = await call(nc, prefix, "list_tasks", ListTasksRequest(), ListTasksReply, timeout=0.5)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return isinstance(rep, ListTasksReply)

    await wait_for(answered, 20, interval=0.1)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _results(task: str) -> Results:
    return Results(
        task=task,
        metrics={"acc": Metric(0.25, 0.05)},
        n_samples=40,
        mode="loglikelihood",
        model_id="m",
        endpoint_url="http://127.0.0.1:9/v1/completions",
        endpoint_type="completions",
        harness="builtin",
        harness_version="0",
    )


async def test_sigkill_while_events_flow_loses_nothing(nats_url: str, prefix: str, tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "daemon.log"
    proc = start_daemon_process(nats_url, prefix, data, log, "--heartbeat-timeout", "30")
    try:
        async with connect(nats_url) as nc:
            await _wait_ready(nc, prefix, proc, log)
            tasks = ["arc_easy", "hellaswag", "gsm8k"]
            rep = await call(nc, prefix, "run", run_request(tmp_path / "out", tasks), RunReply)
            assert isinstance(rep, RunReply), rep
            inv = rep.invocation.invocation_id
            agent = FakeAgentIO(nc, prefix, "agent-r")
            specs = sorted(await agent.take_jobs(3), key=lambda s: s.index)
            published: list[str] = []
            steps = 60

            async def run_jobs() -> None:
                for s in specs:
                    published.append((await agent.status(s, "running")).msg_id)
                for i in range(1, steps + 1):
                    for s in specs:
                        published.append((await agent.emit(ProgressEvent, s, done=i, total=steps)).msg_id)
                    await anyio.sleep(0.02)
                for s in specs:
                    published.append((await agent.emit(ResultEvent, s, results=_results(s.task.name))).msg_id)
                    published.append((await agent.status(s, "succeeded", exit_code=0)).msg_id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_jobs)
                # let the daemon fold part of the flow, then kill it hard in the middle
                await wait_for(lambda: _progress_at_least(nc, prefix, inv, 10), 20)
                sigkill(proc)
            assert len(published) == 3 * (steps + 3)

            proc = start_daemon_process(nats_url, prefix, data, log, "--heartbeat-timeout", "30")
            await _wait_ready(nc, prefix, proc, log)

            st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
            assert isinstance(st, StatusReply)
            assert st.invocation.state == "succeeded"
            for job, spec in zip(st.invocation.jobs, specs, strict=True):
                assert job.state == "succeeded" and job.agent_id == "agent-r" and job.exit_code == 0
                assert job.progress is not None and (job.progress.done, job.progress.total) == (steps, steps)
                assert job.metrics == {"acc": Metric(0.25, 0.05)}
                assert job.last_seq == agent.seq[spec.job_id] == steps + 3

            hist = await event_history(nc, prefix, inv)
            ids = Counter(h for _, h in hist)
            assert all(n == 1 for n in ids.values()), [k for k, n in ids.items() if n > 1]
            agent_ids = [h for ev, h in hist if ev.source == "agent-r"]
            assert sorted(agent_ids) == sorted(published)
            daemon_events = [(ev.job_id, ev.state) for ev, _ in hist if isinstance(ev, StatusEvent) and ev.source == "daemon"]
            assert sorted(daemon_events) == sorted((s.job_id, st_) for s in specs for st_ in ("pending", "dispatched"))
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def test_sigkill_during_dispatch_dispatches_each_job_once(nats_url: str, prefix: str, tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "daemon.log"
    proc = start_daemon_process(nats_url, prefix, data, log)
    n = 40
    try:
        async with connect(nats_url) as nc:
            await _wait_ready(nc, prefix, proc, log)
            rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"] * n), RunReply)
            assert isinstance(rep, RunReply), rep
            sigkill(proc)  # right after the reply: the dispatch of 40 jobs is at most partly done
            inv = rep.invocation.invocation_id
            proc = start_daemon_process(nats_url, prefix, data, log)
            await _wait_ready(nc, prefix, proc, log)

            async def all_dispatched() -> bool:
                st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
                assert not isinstance(st, ApiError), st
                return all(j.state == "dispatched" for j in st.invocation.jobs)

            await wait_for(all_dispatched, 20)
            js = nc.jetstream()
            info = await js.stream_info(Subjects(prefix).jobs_stream)
            assert info.state.messages == n  # each job published exactly once (Nats-Msg-Id de-duplication)
            agent = FakeAgentIO(nc, prefix, "agent-d")
            specs = await agent.take_jobs(n)
            assert sorted(s.index for s in specs) == list(range(n))
            hist = await event_history(nc, prefix, inv)
            states = Counter((ev.job_id, ev.state) for ev, _ in hist if isinstance(ev, StatusEvent))
            assert set(states.values()) == {1} and len(states) == 2 * n
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def _progress_at_least(nc: nats.aio.client.Client, prefix: str, inv: str, done: int) -> bool:
    st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
    return all(j.progress is not None and j.progress.done >= done for j in st.invocation.jobs)
