"""Agents' events (published here exactly as an agent publishes them) folded into the daemon's status."""

from __future__ import annotations

from pathlib import Path

import pytest
from nv_eval.protocol import (
    Metric,
    ProgressEvent,
    ResultEvent,
    Results,
    RunReply,
    StatusReply,
    StatusRequest,
)

from tests.integration.test_daemon_helpers import FakeAgentIO, call, connect, daemon, run_request, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_events_fold_into_status(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy", "gsm8k"]), RunReply)
        inv_id = rep.invocation.invocation_id
        agent = FakeAgentIO(nc, prefix, "agent-a")
        a, b = sorted(await agent.take_jobs(2), key=lambda s: s.index)

        async def status() -> StatusReply:
            return await call(nc, prefix, "status", StatusRequest(id=inv_id), StatusReply)

        await agent.status(a, "running")
        await agent.emit(ProgressEvent, a, done=3, total=10, rps=1.5)
        res = Results(
            task="arc_easy",
            metrics={"acc": Metric(0.5, 0.1)},
            n_samples=10,
            mode="loglikelihood",
            model_id="m",
            endpoint_url="http://127.0.0.1:9/v1/completions",
            endpoint_type="completions",
            harness="builtin",
            harness_version="0",
        )
        await agent.emit(ResultEvent, a, results=res)
        await agent.status(a, "succeeded", exit_code=0)
        # after the terminal state: a late non-terminal status and progress are ignored
        await agent.status(a, "running")
        await agent.emit(ProgressEvent, a, done=4, total=10)
        # b fails as an evaluation failure
        await agent.status(b, "running")
        await agent.status(b, "failed", failure_kind="evaluation", exit_code=2, message="bad data")

        async def settled() -> StatusReply | None:
            st = await status()
            return st if [j.state for j in st.invocation.jobs] == ["succeeded", "failed"] else None

        st = await wait_for(settled, 10)
        ja, jb = st.invocation.jobs
        assert ja.agent_id == "agent-a" and ja.exit_code == 0
        assert ja.metrics == {"acc": Metric(0.5, 0.1)}
        assert ja.progress is not None and (ja.progress.done, ja.progress.total) == (3, 10)
        assert ja.started_at is not None and ja.finished_at is not None
        assert ja.last_seq == 6  # the daemon's two events do not move the agent's numbering; max seq seen
        assert (jb.failure_kind, jb.exit_code, jb.message) == ("evaluation", 2, "bad data")
        assert st.invocation.state == "failed"

        # a malformed event on the stream is logged and skipped; the daemon keeps folding
        await nc.jetstream().publish(f"{prefix}.events.{inv_id}.0.status", b"{garbage")
        await agent.emit(ProgressEvent, b, done=1, total=1)

        async def b_seq() -> bool:
            return (await status()).invocation.jobs[1].last_seq == 3

        await wait_for(b_seq, 10)
        st = await status()
        assert [j.state for j in st.invocation.jobs] == ["succeeded", "failed"]


async def test_recreated_events_stream_is_folded_from_its_start(nats_url: str, prefix: str, tmp_path: Path) -> None:
    from nv_eval.protocol import Subjects

    data = tmp_path / "data"
    async with connect(nats_url) as nc:
        agent = FakeAgentIO(nc, prefix, "agent-w")
        async with daemon(nats_url, prefix, data):
            rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"]), RunReply)
            inv = rep.invocation.invocation_id
            (spec,) = await agent.take_jobs(1)
            for i in range(5):
                await agent.emit(ProgressEvent, spec, done=i, total=10)

            async def folded() -> bool:
                st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
                return st.invocation.jobs[0].last_seq == 5

            await wait_for(folded, 10)
        # someone wipes the events stream while the daemon is down; the daemon recreates it
        await nc.jetstream().delete_stream(Subjects(prefix).events_stream)
        async with daemon(nats_url, prefix, data):
            await agent.status(spec, "succeeded")  # stream sequence 1 of the new stream

            async def done() -> bool:
                st = await call(nc, prefix, "status", StatusRequest(id=inv), StatusReply)
                return st.invocation.jobs[0].state == "succeeded"

            await wait_for(done, 10)
