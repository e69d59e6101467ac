"""The base loop with a user-defined Executor + Runtime (the plugin path of docs/custom-executor.md).

The runtime below is a real (tiny) plugin, not a mock of the loop: it exercises resubmits,
launch failures, runtime bugs and kills while launching against a real nats-server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from nv_eval.agents import Agent, Executor, JobContext, JobFailed, Outcome, Runtime
from nv_eval.protocol import CancelJob, ControlReply, CustomExecution, JobSpec, Subjects, decode, encode

from ._agent_helpers import EventCollector, make_job, publish_job, setup_bus


class ToyRuntime(Runtime):
    name = "toy"
    capabilities = ("toy", "cpu")

    def __init__(self) -> None:
        self.launches: dict[str, int] = {}
        self.teardowns: list[str] = []

    async def launch(self, ctx: JobContext) -> dict[str, Any]:
        mode = ctx.job.params.extra.get("mode")
        n = self.launches[ctx.job.job_id] = self.launches.get(ctx.job.job_id, 0) + 1
        await ctx.save_handle({"n": n})
        if mode == "bad-launch":
            raise JobFailed("toy: the model does not exist")
        if mode == "bug":
            raise RuntimeError("toy runtime bug")
        if mode == "slow-launch":
            await ctx.status("deploying")
            await anyio.sleep(60)
        await ctx.status("running")
        return {"n": n}

    async def watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        await ctx.progress(1, 1)
        if ctx.job.params.extra.get("mode") == "slow-watch":
            await anyio.sleep(2)
        if ctx.job.params.extra.get("mode") == "preempt" and handle["n"] < 3:
            return Outcome(state="failed", message=f"preempted #{handle['n']}", resubmit=True)
        return Outcome(state="succeeded")

    async def stop(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        pass

    async def teardown(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        self.teardowns.append(ctx.job.job_id)


class ToyExecutor(Executor):
    name = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.rt = ToyRuntime()

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        return self.rt.describe(jobs)

    def runtime_for(self, job: JobSpec) -> Runtime:
        return self.rt

    def runtimes(self) -> Sequence[Runtime]:
        return [self.rt]


async def test_custom_runtime_resubmits_failures_and_kill_while_launching(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    ex = CustomExecution(executor="toy", output_dir=str(tmp_path))
    inv = "00000000000000aa"
    jobs = {
        m: make_job(tmp_path, invocation_id=inv, index=i, extra={"mode": m}, execution=ex)
        for i, m in enumerate(["preempt", "bad-launch", "bug", "slow-launch"])
    }
    executor = ToyExecutor()
    agent = Agent(executor, nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "a", agent_id="toy1")
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        for j in jobs.values():
            await publish_job(js, prefix, j, executor="toy")
        slow = jobs["slow-launch"].job_id
        await col.wait_for(lambda: "deploying" in col.states(slow), 10, "deploying")
        msg = await nc.request(Subjects(prefix).control("toy1"), encode(CancelJob(job_id=slow)), timeout=5)
        assert decode(msg.data, ControlReply).ok
        await col.wait_for(lambda: all(col.terminal(j.job_id) for j in jobs.values()), 10, "all terminal")
        tg.cancel_scope.cancel()
    await nc.close()

    pre = jobs["preempt"].job_id
    assert executor.rt.launches[pre] == 3
    assert col.terminal(pre).state == "succeeded"  # type: ignore[union-attr]
    bad = col.terminal(jobs["bad-launch"].job_id)
    assert bad is not None and (bad.state, bad.message, bad.failure_kind) == (
        "failed",
        "toy: the model does not exist",
        "evaluation",
    )
    bug = col.terminal(jobs["bug"].job_id)
    assert bug is not None and bug.state == "failed" and bug.failure_kind == "infrastructure"
    assert "toy runtime bug" in (bug.message or "")
    assert col.states(slow) == ["deploying", "killed"]
    # teardown ran for every job, including the failed and killed ones
    assert sorted(executor.rt.teardowns) == sorted(j.job_id for j in jobs.values())


async def test_agent_stopped_while_launching_fails_the_job_on_restart(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    ex = CustomExecution(executor="toy", output_dir=str(tmp_path))
    job = make_job(tmp_path, extra={"mode": "slow-launch"}, execution=ex)
    first = ToyExecutor()
    async with anyio.create_task_group() as tg:
        await tg.start(Agent(first, nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "a", agent_id="t2").run)
        await publish_job(js, prefix, job, executor="toy")
        await col.wait_for(lambda: "deploying" in col.states(job.job_id), 10, "deploying")
        tg.cancel_scope.cancel()  # the agent stops mid-launch: no terminal status, no teardown
    assert col.terminal(job.job_id) is None and first.rt.teardowns == []
    second = ToyExecutor()
    async with anyio.create_task_group() as tg:
        await tg.start(Agent(second, nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "a").run)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 10, "terminal after restart")
        tg.cancel_scope.cancel()
    await nc.close()
    term = col.terminal(job.job_id)
    assert term is not None and term.state == "failed" and term.failure_kind == "infrastructure"
    assert "restarted while launching" in (term.message or "")
    assert second.rt.launches == {} and second.rt.teardowns == [job.job_id]  # cleaned up, never relaunched
    seqs = [e.seq for e in col.of(job.job_id)]
    assert seqs == sorted(set(seqs))


async def test_redispatched_attempt_of_a_running_job_is_adopted_not_run_twice(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    import msgspec

    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    ex = CustomExecution(executor="toy", output_dir=str(tmp_path))
    job = make_job(tmp_path, extra={"mode": "slow-watch"}, execution=ex)
    executor = ToyExecutor()
    async with anyio.create_task_group() as tg:
        await tg.start(Agent(executor, nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "a").run)
        await publish_job(js, prefix, job, executor="toy")
        await col.wait_for(lambda: "running" in col.states(job.job_id), 10, "running")
        await publish_job(js, prefix, msgspec.structs.replace(job, attempt=2), executor="toy")
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 10, "terminal")
        tg.cancel_scope.cancel()
    await nc.close()
    assert executor.rt.launches == {job.job_id: 1}
    statuses = [e for e in col.of(job.job_id) if e.__class__.__name__ == "StatusEvent"]
    assert [(e.state, e.attempt) for e in statuses] == [("running", 1), ("running", 2), ("succeeded", 2)]  # type: ignore[attr-defined]
    seqs = [e.seq for e in col.of(job.job_id)]
    assert seqs == sorted(set(seqs)) and seqs[-1] > 1_000_000
