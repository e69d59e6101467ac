"""The Slurm runtime in local mode (the agent on the login node: sbatch/squeue/sacct/scancel
as subprocesses) on the real single-node Slurm: exit codes, kill, missing secrets, and one
``squeue`` per poll however many jobs are watched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from nv_eval.agents import JobFailed
from nv_eval.agents.slurm import LocalConn, SlurmExecutor, SlurmRuntime

from tests._support import slurm as support
from tests._support.slurm import RecordingContext, slurm_job, squeue_ids

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

slurm_cluster = support.slurm_cluster
OK_RESULTS = Path(__file__).resolve().parents[1] / "_support" / "slurm_results.json"


def local_runtime(job: Any) -> SlurmRuntime:
    rt = SlurmExecutor().runtime_for(job)
    assert isinstance(rt, SlurmRuntime) and isinstance(rt.conn, LocalConn)
    return rt


async def test_failed_harness_is_an_evaluation_failure_with_its_last_line(slurm_cluster: str, tmp_path: Path) -> None:
    job = slurm_job(tmp_path, harness_command="bash -c 'echo doing things >&2; echo \"bad task name\" >&2; exit 2'")
    rt = local_runtime(job)
    ctx = RecordingContext(job)
    h = await rt.launch(ctx)
    with anyio.fail_after(90):
        out = await rt.watch(ctx, h)
    assert out.state == "failed" and out.failure_kind == "evaluation" and out.exit_code == 2
    assert out.message == "bad task name"
    assert ("stderr", "doing things") in ctx.logs


async def test_kill_and_one_squeue_per_poll_for_many_jobs(slurm_cluster: str, tmp_path: Path) -> None:
    jobs = [slurm_job(tmp_path, task=f"s{i}", index=i, harness_command="bash -c 'sleep 300'") for i in range(6)]
    rt = local_runtime(jobs[0])
    ctxs = [RecordingContext(j) for j in jobs]
    handles: list[dict[str, Any]] = []
    for c in ctxs:
        handles.append(await rt.launch(c))
    outcomes: dict[int, Any] = {}

    async def watch(i: int) -> None:
        outcomes[i] = await rt.watch(ctxs[i], handles[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(watch, i)
        with anyio.fail_after(60):
            while not all(any(s == "running" for s, _ in c.statuses) for c in ctxs[:2]):
                await anyio.sleep(0.1)
        polls, squeues = rt.poller.polls, rt.conn.calls["squeue"]
        await anyio.sleep(2.0)
        assert rt.poller.polls > polls
        assert rt.conn.calls["squeue"] - squeues == rt.poller.polls - polls  # one per poll, not one per job
        for c, h in zip(ctxs, handles, strict=True):
            c.cancelled.set()
            await rt.stop(c, h)
    for i, h in enumerate(handles):
        assert outcomes[i].state == "killed"
        assert h["slurm_job_id"] not in squeue_ids()


async def test_missing_secret_fails_before_anything_is_submitted(slurm_cluster: str, tmp_path: Path) -> None:
    job = slurm_job(tmp_path, env_names=["NVE_SURELY_UNSET_SECRET"])
    rt = local_runtime(job)
    with pytest.raises(JobFailed) as e:
        await rt.launch(RecordingContext(job))
    assert "NVE_SURELY_UNSET_SECRET" in e.value.message
    assert rt.conn.calls.get("sbatch", 0) == 0 and rt.conn.calls.get("bash", 0) == 0


@pytest.mark.timeout(300)
async def test_timeout_is_resubmitted_by_policy_and_counted(slurm_cluster: str, tmp_path: Path) -> None:
    """A real TIMEOUT (time_limit 1 minute): the first run sleeps past it, the resubmitted run
    finds the first run's marker (as the harness finds its request cache) and finishes."""
    marker = tmp_path / "first-run-was-here"
    ok_results = OK_RESULTS
    job = slurm_job(tmp_path, time_limit="00:01:00", max_resubmits=1)
    dest = Path(job.task_dir) / "results.json"
    cmd = f"bash -c 'if [ -e {marker} ]; then cp {ok_results} {dest}; else touch {marker}; sleep 600; fi'"
    job = slurm_job(tmp_path, invocation_id=job.invocation_id, time_limit="00:01:00", max_resubmits=1, harness_command=cmd)
    rt = local_runtime(job)
    ctx = RecordingContext(job)
    h = await rt.launch(ctx)
    with anyio.fail_after(280):
        out = await rt.watch(ctx, h)
    assert out.state == "succeeded", ctx.text()
    assert h["resubmits"] == 1 and len(h["slurm_job_ids"]) == 2
    assert any("ended TIMEOUT; resubmitted as" in ln for _, ln in ctx.logs)
    # the second run may end before a poll sees it RUNNING
    assert [s for s, _ in ctx.statuses][:3] == ["deploying", "running", "deploying"]
    assert len(ctx.results) == 1


@pytest.mark.parametrize("concurrency", ["sequential", "parallel"])
async def test_invocation_placement_runs_all_tasks_in_one_allocation(
    slurm_cluster: str, tmp_path: Path, concurrency: str
) -> None:
    first = slurm_job(tmp_path, task="t0", placement="invocation")
    inv = first.invocation_id
    jobs = []
    for i in range(3):
        task_dir = tmp_path / inv / f"t{i}"
        # each task records when it ran, then "finishes" with a results document
        cmd = (f"bash -c 'date +%s.%N >{task_dir}/start; sleep 2; date +%s.%N >{task_dir}/end; "
               f"cp {OK_RESULTS} {task_dir}/results.json'")  # fmt: skip
        jobs.append(slurm_job(tmp_path, task=f"t{i}", index=i, invocation_id=inv, placement="invocation",
                              task_concurrency=concurrency, harness_command=cmd))  # fmt: skip
    rt = local_runtime(jobs[0])
    rt.alloc_linger = 3
    ctxs = [RecordingContext(j) for j in jobs]
    outs: dict[int, Any] = {}

    async def one(i: int) -> None:
        h = await rt.launch(ctxs[i])
        outs[i] = await rt.watch(ctxs[i], h)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
    assert [outs[i].state for i in range(3)] == ["succeeded"] * 3
    assert rt.conn.calls["sbatch"] == 1
    assert len({c.handle["slurm_job_id"] for c in ctxs}) == 1
    spans = sorted(
        (float((tmp_path / inv / f"t{i}" / "start").read_text()), float((tmp_path / inv / f"t{i}" / "end").read_text()))
        for i in range(3)
    )
    overlapping = any(spans[k + 1][0] < spans[k][1] for k in range(2))
    assert overlapping == (concurrency == "parallel"), spans


async def test_invocation_placement_kill_stops_tasks_and_the_allocation(slurm_cluster: str, tmp_path: Path) -> None:
    first = slurm_job(tmp_path, task="k0", placement="invocation")
    jobs = [
        slurm_job(tmp_path, task=f"k{i}", index=i, invocation_id=first.invocation_id, placement="invocation",
                  harness_command="bash -c 'sleep 300'")  # fmt: skip
        for i in range(2)
    ]  # sequential: k0 runs, k1 waits in the queue of the allocation
    rt = local_runtime(jobs[0])
    ctxs = [RecordingContext(j) for j in jobs]
    handles = [await rt.launch(c) for c in ctxs]
    sid = handles[0]["slurm_job_id"]
    outs: dict[int, Any] = {}

    async def watch(i: int) -> None:
        outs[i] = await rt.watch(ctxs[i], handles[i])

    async with anyio.create_task_group() as tg:
        for i in range(2):
            tg.start_soon(watch, i)
        with anyio.fail_after(60):
            while not any(s == "running" for s, _ in ctxs[0].statuses):
                await anyio.sleep(0.1)
        for c in ctxs:
            c.cancelled.set()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as stops:
                for c, h in zip(ctxs, handles, strict=True):
                    stops.start_soon(rt.stop, c, h)
    assert [outs[0].state, outs[1].state] == ["killed", "killed"]
    assert sid not in squeue_ids()
    assert not (Path(jobs[1].task_dir) / "logs" / f"exit_code.{sid}").exists()  # k1 never started


async def test_invocation_allocation_node_failure_requeues_the_task(slurm_cluster: str, tmp_path: Path) -> None:
    """The allocation dies with the node (NODE_FAIL): the unfinished task is queued into a new
    allocation (counted) and completes there; its first run's work is found (a marker here,
    the request cache for the real harness)."""
    marker = tmp_path / "first-run-was-here"
    first = slurm_job(tmp_path, task="nf", placement="invocation")
    dest = Path(first.task_dir) / "results.json"
    cmd = f"bash -c 'if [ -e {marker} ]; then cp {OK_RESULTS} {dest}; else touch {marker}; sleep 600; fi'"
    job = slurm_job(tmp_path, task="nf", invocation_id=first.invocation_id, placement="invocation",
                    max_resubmits=1, harness_command=cmd)  # fmt: skip
    rt = local_runtime(job)
    ctx = RecordingContext(job)
    h = await rt.launch(ctx)
    out: list[Any] = []

    async def watch() -> None:
        out.append(await rt.watch(ctx, h))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with anyio.fail_after(60):
                while not (any(s == "running" for s, _ in ctx.statuses) and marker.exists()):
                    await anyio.sleep(0.1)
            await anyio.run_process(["scontrol", "update", f"NodeName={slurm_cluster}", "State=DOWN", "Reason=nveval-test"])
            with anyio.fail_after(60):
                while len(h["slurm_job_ids"]) < 2 and not out:
                    await anyio.sleep(0.1)
            support.resume_node()
            with anyio.fail_after(90):
                while not out:
                    await anyio.sleep(0.2)
    finally:
        support.resume_node()
    assert out[0].state == "succeeded", (out[0], ctx.text())
    assert h["resubmits"] == 1 and len(h["slurm_job_ids"]) == 2
    assert any("ended NODE_FAIL; task queued in allocation" in ln for _, ln in ctx.logs)
    assert len(ctx.results) == 1


@pytest.mark.model
@pytest.mark.timeout(600)
async def test_deployment_started_once_inside_the_allocation(slurm_cluster: str, tmp_path: Path) -> None:
    """A llamacpp deployment (the real SmolLM2) started by the allocation itself, two tasks against it."""
    from nv_eval.protocol import LlamaCppDeployment, TaskParams

    from tests._support.services import free_port

    dep = LlamaCppDeployment(port=free_port(), n_threads=1)
    first = slurm_job(tmp_path, task="arc_easy", placement="invocation")
    jobs = [
        slurm_job(tmp_path, task=t, index=i, invocation_id=first.invocation_id, placement="invocation",
                  params=TaskParams(limit_samples=1), deployment=dep, deployment_group=f"{first.invocation_id}.d")  # fmt: skip
        for i, t in enumerate(["arc_easy", "arc_challenge"])
    ]
    rt = local_runtime(jobs[0])
    rt.alloc_linger = 2
    ctxs = [RecordingContext(j) for j in jobs]
    outs: dict[int, Any] = {}

    async def one(i: int) -> None:
        h = await rt.launch(ctxs[i])
        outs[i] = await rt.watch(ctxs[i], h)

    with anyio.fail_after(540):
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(one, i)
    for i in range(2):
        assert outs[i].state == "succeeded", (outs[i], ctxs[i].text()[-2000:])
        assert ctxs[i].deployments == ["ready"]
        assert ctxs[i].results[0].n_samples == 1
        assert ctxs[i].results[0].endpoint_url.startswith(f"http://127.0.0.1:{dep.port}/v1")
    assert rt.conn.calls["sbatch"] == 1
    alloc = Path(jobs[0].invocation_dir) / ".slurm-alloc"
    assert (alloc / "deployment.ready").exists()
    assert (alloc / "deployment.log").read_text().count("Uvicorn running") <= 1  # started once
