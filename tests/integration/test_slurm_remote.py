"""The Slurm runtime in remote mode, end to end on real parts: asyncssh to the real sshd on
127.0.0.1:2222, the real single-node Slurm, the real harness against the real SmolLM2
endpoint (container runtime "none": the node is this machine, the harness is the venv's).

Until these tests switch to the full agent they drive the runtime the way the base loop
does (launch -> watch, stop on kill) with a recording JobContext.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nv_eval.agents.slurm import SlurmExecutor, SlurmRuntime
from nv_eval.protocol import JobSpec, Results, TaskParams, new_invocation_id

from tests._support import slurm as support
from tests._support.slurm import (
    HARNESS,
    CountingProxy,
    RecordingContext,
    resume_node,
    slurm_job,
    squeue_ids,
    start_sshd,
    stop_sshd,
)

# fixtures (real Slurm, real sshd, a counting proxy in front of the real model)
slurm_cluster = support.slurm_cluster
sshd_login = support.sshd_login
counting_proxy = support.counting_proxy

pytestmark = [pytest.mark.slurm, pytest.mark.sshd, pytest.mark.timeout(300)]


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.1)
    _ = what


def runtime_for(job: JobSpec) -> SlurmRuntime:
    rt = SlurmExecutor().runtime_for(job)
    assert isinstance(rt, SlurmRuntime)
    assert rt.conn.remote
    return rt


async def run_job(rt: SlurmRuntime, ctx: RecordingContext, timeout: float = 200) -> Any:
    handle = await rt.launch(ctx)
    with anyio.fail_after(timeout):
        return await rt.watch(ctx, handle)


@pytest.mark.model
@pytest.mark.timeout(900)
@pytest.mark.parametrize("placement", ["invocation", "task"])
async def test_two_tasks_over_ssh_match_the_harness_as_a_process(
    smollm2: Any, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path, placement: str
) -> None:
    inv = new_invocation_id()
    params = TaskParams(limit_samples=2)
    jobs = [
        slurm_job(tmp_path / "slurm", task=t, index=i, invocation_id=inv, endpoint_url=smollm2.url, params=params,
                  placement=placement, **sshd_login)  # fmt: skip
        for i, t in enumerate(["arc_easy", "arc_challenge"])
    ]
    ex = SlurmExecutor()
    rt = ex.runtime_for(jobs[0])
    assert ex.runtime_for(jobs[1]) is rt  # one connection, one poller for both
    assert isinstance(rt, SlurmRuntime)
    ctxs = [RecordingContext(j) for j in jobs]
    outcomes: dict[int, Any] = {}

    async def one(i: int) -> None:
        outcomes[i] = await run_job(rt, ctxs[i], 600)  # bounded; generous for shared 2-core machines

    try:
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(one, i)
    finally:
        await rt.aclose()
    for i, ctx in enumerate(ctxs):
        assert outcomes[i].state == "succeeded", (outcomes[i], ctx.text()[-2000:])
        assert [s for s, _ in ctx.statuses] == ["deploying", "running"]
        assert len(ctx.results) == 1 and ctx.progress_events
        assert any(s == "stderr" for s, _ in ctx.logs)
    # one squeue per poll for both jobs, never one per job; everything over ONE ssh connection
    assert rt.conn.calls["squeue"] == rt.poller.polls
    # placement invocation: ONE allocation ran both tasks; task: one Slurm job per task
    assert rt.conn.calls["sbatch"] == (1 if placement == "invocation" else 2)
    sids = {c.handle["slurm_job_id"] for c in ctxs}
    assert len(sids) == (1 if placement == "invocation" else 2)
    assert getattr(rt.conn, "connects", 0) == 1

    # the same tasks through the harness as a plain process give the same results
    for job, ctx in zip(jobs, ctxs, strict=True):
        out = tmp_path / "process" / job.task.name
        cmd = [HARNESS, "run", "--task", job.task.name, "--model-id", job.endpoint.model_id,
               "--endpoint-url", smollm2.url, "--endpoint-type", "completions", "--output-dir", str(out),
               "--params-json", '{"limit_samples":2}']  # fmt: skip
        with anyio.fail_after(200):
            p = await anyio.run_process(cmd, check=False)
        assert p.returncode == 0, p.stderr.decode()[-2000:]
        ref = msgspec.json.decode((out / "results.json").read_bytes(), type=Results)
        got = ctx.results[0]
        assert got.n_samples == ref.n_samples == 2
        assert {k: m.value for k, m in got.metrics.items()} == {k: m.value for k, m in ref.metrics.items()}


@pytest.mark.model
async def test_kill_mid_run_leaves_no_slurm_job(
    counting_proxy: CountingProxy, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path
) -> None:
    counting_proxy.delay = 0.3
    job = slurm_job(tmp_path, endpoint_url=counting_proxy.url, params=TaskParams(limit_samples=50), **sshd_login)
    rt = runtime_for(job)
    ctx = RecordingContext(job)
    try:
        handle = await rt.launch(ctx)
        sid = handle["slurm_job_id"]
        outcome: list[Any] = []

        async def watch() -> None:
            outcome.append(await rt.watch(ctx, handle))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await wait_until(lambda: counting_proxy.posts >= 3, 120, "requests flowing")
            assert sid in squeue_ids()
            ctx.cancelled.set()
            t0 = time.monotonic()
            await rt.stop(ctx, handle)  # scancel + verified gone
            assert time.monotonic() - t0 < 8
            with anyio.fail_after(30):
                while outcome == []:
                    await anyio.sleep(0.1)
    finally:
        await rt.aclose()
    assert outcome[0].state == "killed"
    assert sid not in squeue_ids()
    posts = counting_proxy.posts
    await anyio.sleep(1.5)
    assert counting_proxy.posts == posts  # nothing is still sending requests


@pytest.mark.model
async def test_node_failure_is_resubmitted_and_finished_requests_are_not_sent_again(
    counting_proxy: CountingProxy, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path
) -> None:
    job = slurm_job(
        tmp_path,
        endpoint_url=counting_proxy.url,
        params=TaskParams(limit_samples=3, parallelism=1),
        max_resubmits=2,
        **sshd_login,
    )
    rt = runtime_for(job)
    ctx = RecordingContext(job)
    outcome: list[Any] = []
    try:
        handle = await rt.launch(ctx)
        first = handle["slurm_job_id"]

        async def watch() -> None:
            outcome.append(await rt.watch(ctx, handle))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            done = lambda: ctx.progress_events[-1][0] if ctx.progress_events else 0  # noqa: E731
            await wait_until(lambda: done() >= 2, 200, "requests finished before the failure")
            await anyio.run_process(["scontrol", "update", f"NodeName={slurm_cluster}", "State=DOWN", "Reason=nveval-test"])
            await wait_until(lambda: len(handle.get("slurm_job_ids", [])) >= 2 or outcome != [], 60, "resubmit")
            posts_at_failure = counting_proxy.posts
            resume_node()
            with anyio.fail_after(200):
                while outcome == []:
                    await anyio.sleep(0.2)
    finally:
        resume_node()
        await rt.aclose()
    assert outcome[0].state == "succeeded", (outcome[0], ctx.text()[-3000:])
    assert handle["resubmits"] == 1 and handle["slurm_job_ids"][0] == first and len(handle["slurm_job_ids"]) == 2
    assert any("NODE_FAIL" in ln and "resubmitted" in ln for _, ln in ctx.logs)
    res = ctx.results[0]
    assert res.usage.cached_requests >= 2  # the second run resumed from the request cache
    # the second attempt sent only what the first had not finished (+ its endpoint probe)
    sent_after = counting_proxy.posts - posts_at_failure
    assert sent_after <= res.usage.requests + 5, (sent_after, res.usage)
    assert res.usage.requests < res.usage.requests + res.usage.cached_requests


@pytest.mark.model
async def test_restarted_runtime_follows_the_running_job_without_resubmitting(
    counting_proxy: CountingProxy, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path
) -> None:
    job = slurm_job(tmp_path, endpoint_url=counting_proxy.url, params=TaskParams(limit_samples=3), **sshd_login)
    rt1 = runtime_for(job)
    ctx1 = RecordingContext(job)
    handle = await rt1.launch(ctx1)
    sid = handle["slurm_job_id"]
    async with anyio.create_task_group() as tg:  # the first "agent" watches until progress, then dies

        async def first_watch() -> None:
            await rt1.watch(ctx1, handle)
            pytest.fail("job finished before the restart")

        tg.start_soon(first_watch)
        await wait_until(lambda: bool(ctx1.progress_events), 200, "progress")
        tg.cancel_scope.cancel()
    assert ("running", f"Slurm job {sid} running") in ctx1.statuses
    await rt1.aclose()
    saved = ctx1.handles[-1]
    lines1 = [ln for s, ln in ctx1.logs if s == "stderr"]

    rt2 = runtime_for(job)  # a new runtime object (new connection, new poller) = restarted agent
    ctx2 = RecordingContext(job)
    try:
        with anyio.fail_after(200):
            outcome = await rt2.watch(ctx2, dict(saved))
    finally:
        await rt2.aclose()
    assert outcome.state == "succeeded", ctx2.text()[-2000:]
    assert rt2.conn.calls.get("sbatch", 0) == 0
    assert ctx2.handles[-1]["slurm_job_id"] == sid and ctx2.handles[-1]["resubmits"] == 0
    lines2 = [ln for s, ln in ctx2.logs if s == "stderr"]
    stderr = (Path(saved["task_dir"]) / "logs" / "stderr.log").read_text().splitlines()
    assert lines1 + lines2 == stderr  # every line exactly once across the restart
    assert len(ctx2.results) == 1


@pytest.mark.model
async def test_ssh_connection_dropped_mid_run_reconnects(
    counting_proxy: CountingProxy, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path
) -> None:
    job = slurm_job(tmp_path, endpoint_url=counting_proxy.url, params=TaskParams(limit_samples=3), **sshd_login)
    rt = runtime_for(job)
    ctx = RecordingContext(job)
    outcome: list[Any] = []
    try:
        handle = await rt.launch(ctx)

        async def watch() -> None:
            outcome.append(await rt.watch(ctx, handle))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await wait_until(lambda: any(s == "running" for s, _ in ctx.statuses), 60, "running")
            stop_sshd()
            await wait_until(lambda: getattr(rt.conn, "_conn", None) is None, 30, "the connection is noticed dead")
            await anyio.sleep(3.0)  # polls and log reads keep failing and retrying meanwhile
            assert outcome == []  # an ssh outage is not a job failure
            start_sshd()
            with anyio.fail_after(200):
                while outcome == []:
                    await anyio.sleep(0.2)
    finally:
        start_sshd()
        await rt.aclose()
    assert outcome[0].state == "succeeded", (outcome[0], ctx.text()[-2000:])
    assert getattr(rt.conn, "connects", 0) >= 2
    assert [s for s, _ in ctx.statuses] == ["deploying", "running"]
    assert len(ctx.results) == 1


async def test_hostile_values_are_inert_through_real_sbatch(
    slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "markers"
    marker.mkdir()
    secret = "s3cr3t-$(touch " + str(marker) + "/sec)-value"
    monkeypatch.setenv("NVE_TEST_SECRET", secret)
    job = slurm_job(
        tmp_path,
        task=f"t'\"; touch {marker}/a; `touch {marker}/b` $(touch {marker}/c)",
        env={"E1": f"$(touch {marker}/d)", "E2": f"x\ntouch {marker}/e"},
        env_names=["NVE_TEST_SECRET"],
        harness_command="bash -c 'echo \"sha=$(printf %s \"$NVE_TEST_SECRET\" | sha256sum | cut -c1-16)\"; echo \"E1=$E1\"'",
        **sshd_login,
    )
    rt = runtime_for(job)
    ctx = RecordingContext(job)
    try:
        outcome = await run_job(rt, ctx, 60)
    finally:
        await rt.aclose()
    assert list(marker.iterdir()) == []
    task_dir = Path(ctx.handle["task_dir"])
    out = (task_dir / "logs" / "stdout.log").read_text()
    assert f"sha={hashlib.sha256(secret.encode()).hexdigest()[:16]}" in out  # the job got the secret
    assert f"E1=$(touch {marker}/d)" in out
    # the job ran (exit 0) but wrote no results.json: a clear evaluation failure
    assert outcome.state == "failed" and "results.json" in (outcome.message or "")
    for f in (task_dir / "logs").iterdir():
        assert secret not in f.read_text(errors="replace"), f
    assert all(secret not in ln for _, ln in ctx.logs)
    _ = msgspec


async def test_host_key_is_verified_unless_explicitly_skipped(sshd_login: dict[str, Any], tmp_path: Path) -> None:
    from nv_eval.agents.slurm import SshConn, SshTarget
    from nv_eval.agents.slurm._conn import ConnError

    other = tmp_path / "other_key"
    await anyio.run_process(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd_login['port']} " + " ".join((tmp_path / "other_key.pub").read_text().split()[:2]) + "\n")
    base = {k: sshd_login[k] for k in ("port", "username", "identity_file")}
    bad = SshConn(SshTarget(host="127.0.0.1", known_hosts=str(wrong), **base))
    with anyio.fail_after(20), pytest.raises(ConnError, match="host key"):
        await bad.run(["true"])
    await bad.aclose()
    skip = SshConn(SshTarget(host="127.0.0.1", known_hosts=str(wrong), insecure_skip_host_key_check=True, **base))
    good = SshConn(SshTarget(host="127.0.0.1", known_hosts=sshd_login["known_hosts"], **base))
    try:
        for c in (skip, good):
            with anyio.fail_after(20):
                r = await c.run(["echo", "it's $(fine)"])
            assert r.rc == 0 and r.stdout == "it's $(fine)\n"
    finally:
        await skip.aclose()
        await good.aclose()
