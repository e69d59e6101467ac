"""The Docker runtime against a real dockerd, the real harness image and SmolLM2 (llama.cpp).

Drives ``DockerRuntime`` directly through a recording JobContext (launch -> watch -> teardown,
as the base loop does); ``test_docker_agent.py`` runs the same through the real agent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from nv_eval.agents.local._docker import DockerRuntime
from nv_eval.protocol import JobSpec

from tests._support.docker import (
    RecordingContext,
    build_images,
    docker_networks,
    docker_ps,
    plan,
    remove_labelled,
    results_file,
    start_dockerd,
)
from tests._support.services import SMOLLM2_MODEL_ID, Service

pytestmark = [pytest.mark.docker]
TASKS = ["arc_challenge", "hellaswag", "winogrande"]
LIMIT = 3


@pytest.fixture(scope="session")
def docker_images() -> Iterator[None]:
    start_dockerd()
    build_images(harness=True, llamacpp=True)
    yield


def _doc(tmp: Path, tasks: list[str], deployment: dict[str, Any] | None, url: str | None = None,
         network: str = "host", limit: int = LIMIT) -> dict[str, Any]:  # fmt: skip
    doc: dict[str, Any] = {
        "execution": {"type": "local", "runtime": "docker", "output_dir": str(tmp), "network": network},
        "target": {"api_endpoint": {"model_id": SMOLLM2_MODEL_ID, "type": "completions"}},
        "evaluation": {"tasks": [{"name": t} for t in tasks], "params": {"limit_samples": limit}},
    }
    if url:
        doc["target"]["api_endpoint"]["url"] = url
    if deployment:
        doc["deployment"] = deployment
    return doc


async def _run_job(rt: DockerRuntime, ctx: RecordingContext) -> str:
    """launch -> watch -> teardown, as the base loop does; returns the final state."""
    try:
        handle = await rt.launch(ctx)
        outcome = await rt.watch(ctx, handle)
        state, msg = outcome.state, outcome.message
    except Exception as e:  # JobFailed
        state, msg = "failed", getattr(e, "message", repr(e))
    if ctx.cancelled.is_set() and state != "succeeded":
        state = "killed"
    await ctx.status(state, msg)  # type: ignore[arg-type]
    with anyio.CancelScope(shield=True):
        await rt.teardown(ctx, ctx.handle or {})
    return state


def _process_results(job: JobSpec, url: str, out: Path) -> dict[str, float]:
    """The same task run by the harness as a process against the host's SmolLM2 server."""
    import json

    cmd = [str(Path(sys.executable).parent / "nv-eval-harness"), "run", "--task", job.task.name,
           "--model-id", SMOLLM2_MODEL_ID, "--endpoint-url", url, "--endpoint-type", "completions",
           "--output-dir", str(out), "--params-json", json.dumps({"limit_samples": LIMIT})]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    return {k: v["value"] for k, v in res["metrics"].items()}


async def test_no_deployment_host_network(docker_images: None, smollm2: Service, tmp_path: Path) -> None:
    """One task against the host's endpoint: logs and progress stream, result arrives, container gone."""
    (job,) = plan(_doc(tmp_path, ["arc_challenge"], None, url=smollm2.url + "/completions"))
    rt = DockerRuntime()
    ctx = RecordingContext(job)
    try:
        state = await _run_job(rt, ctx)
        assert state == "succeeded", ctx.events[-5:]
        assert ctx.states() == ["running", "succeeded"]
        assert ctx.kinds("progress"), "harness progress lines became progress events"
        last = ctx.kinds("progress")[-1]
        assert last["done"] == last["total"] > 0
        assert ctx.log_lines("stderr"), "stderr lines became log events"
        res = ctx.results()
        assert res is not None and res.n_samples == LIMIT and res == results_file(job)
        assert (Path(job.task_dir) / "logs" / "stderr.log").read_text().strip()
        assert not docker_ps(f"nv-eval.invocation={job.invocation_id}")
    finally:
        remove_labelled(f"nv-eval.invocation={job.invocation_id}")
        await rt.aclose()


@pytest.mark.timeout(1800)  # ~2 x 30 echo requests; minutes on a loaded 2-core machine
async def test_shared_llamacpp_deployment_three_tasks(docker_images: None, smollm2: Service, tmp_path: Path) -> None:
    """Three tasks share ONE llama.cpp container on a per-invocation bridge network; results equal the
    process runtime's on the same questions; nothing is left behind."""
    jobs = plan(_doc(tmp_path, TASKS, {"type": "llamacpp", "n_threads": 2, "readiness_timeout": 120},
                     network="bridge"))  # fmt: skip
    inv = jobs[0].invocation_id
    assert len({j.deployment_group for j in jobs}) == 1
    rt = DockerRuntime()
    ctxs = [RecordingContext(j) for j in jobs]
    seen_models: set[str] = set()
    states: dict[str, str] = {}

    async def watch_models(done: anyio.Event) -> None:
        while not done.is_set():
            seen_models.update(docker_ps(f"nv-eval.invocation={inv}", "nv-eval.role=deployment"))
            await anyio.sleep(0.5)

    try:
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_models, done)
            async with anyio.create_task_group() as jobs_tg:
                for c in ctxs:

                    async def one(c: RecordingContext = c) -> None:
                        states[c.job.job_id] = await _run_job(rt, c)

                    jobs_tg.start_soon(one)
            done.set()
        assert set(states.values()) == {"succeeded"}, [c.events[-3:] for c in ctxs]
        starting = [d for c in ctxs for d in c.kinds("deployment") if d["state"] == "starting"]
        assert len(starting) == 1, "exactly one model cold start for the invocation"
        assert len(seen_models) == 1, seen_models
        assert all(d["state"] == "ready" for c in ctxs for d in c.kinds("deployment")[-1:] if d["state"] != "stopped")
        assert not docker_ps(f"nv-eval.invocation={inv}"), "all containers removed"
        assert not docker_networks(f"nv-eval.invocation={inv}"), "the per-invocation network is removed"
        for j in jobs:
            mine = {k: v.value for k, v in results_file(j).metrics.items()}
            theirs = _process_results(j, smollm2.url, tmp_path / "process" / j.task.name)
            assert mine.keys() == theirs.keys()
            for k in mine:
                assert mine[k] == pytest.approx(theirs[k], abs=1e-9), (j.task.name, k)
    finally:
        remove_labelled(f"nv-eval.invocation={inv}")
        await rt.aclose()


@pytest.mark.timeout(900)
async def test_kill_mid_run_removes_everything(docker_images: None, tmp_path: Path) -> None:
    """Kill while the harness runs: every container (model and benchmark) gone within 10 s, jobs killed."""
    jobs = plan(_doc(tmp_path, ["hellaswag", "arc_challenge"], {"type": "llamacpp", "n_threads": 2,
                     "readiness_timeout": 120}, network="bridge", limit=200))  # fmt: skip
    inv = jobs[0].invocation_id
    rt = DockerRuntime()
    ctxs = [RecordingContext(j) for j in jobs]
    states: dict[str, str] = {}
    try:
        async with anyio.create_task_group() as tg:
            for c in ctxs:

                async def one(c: RecordingContext = c) -> None:
                    states[c.job.job_id] = await _run_job(rt, c)

                tg.start_soon(one)
            with anyio.fail_after(300):  # every harness container runs and has logged
                while not all("running" in c.states() and c.log_lines("stderr") for c in ctxs):
                    await anyio.sleep(0.2)
            await anyio.sleep(1.0)
            t0 = time.monotonic()
            for c in ctxs:  # the base loop: set cancelled, call stop with the saved handle
                c.cancelled.set()
                tg.start_soon(rt.stop, c, c.handle or {})
        with anyio.fail_after(10):
            while docker_ps(f"nv-eval.invocation={inv}"):
                await anyio.sleep(0.1)
        assert time.monotonic() - t0 < 10
        assert set(states.values()) == {"killed"}
    finally:
        remove_labelled(f"nv-eval.invocation={inv}")
        await rt.aclose()


async def test_deployment_never_healthy_fails_with_last_logs(docker_images: None, tmp_path: Path) -> None:
    """A generic server that never listens: jobs fail after the readiness timeout with its last log
    lines in the error; nothing is left running."""
    dep = {"type": "generic", "image": "nv-eval/harness:latest", "readiness_timeout": 3, "port": 18123,
           "command": "echo booting the fake server; echo still loading weights; sleep 600"}  # fmt: skip
    jobs = plan(_doc(tmp_path, ["arc_challenge", "winogrande"], dep, network="bridge"))
    inv = jobs[0].invocation_id
    rt = DockerRuntime()
    ctxs = [RecordingContext(j) for j in jobs]
    try:
        t0 = time.monotonic()
        for c in ctxs:  # sequential, like max_parallel_tasks: 1
            state = await _run_job(rt, c)
            assert state == "failed"
            msg = c.kinds("status")[-1]["message"]
            assert "not ready within 3s" in msg and "still loading weights" in msg, msg
            failed = [d for d in c.kinds("deployment") if d["state"] == "failed"]
            assert failed and "still loading weights" in failed[0]["last_logs"]
        assert time.monotonic() - t0 < 60
        assert not docker_ps(f"nv-eval.invocation={inv}")
    finally:
        remove_labelled(f"nv-eval.invocation={inv}")
        await rt.aclose()


def test_pull_failure_names_the_image(docker_images: None, tmp_path: Path) -> None:
    doc = _doc(tmp_path, ["arc_challenge"], None, url="http://127.0.0.1:9/v1/completions")
    doc["execution"]["harness_image"] = "nv-eval/does-not-exist:1"
    (job,) = plan(doc)
    rt = DockerRuntime()

    async def go() -> str:
        try:
            return await _run_job(rt, ctx)
        finally:
            await rt.aclose()

    ctx = RecordingContext(job)
    assert anyio.run(go) == "failed"
    msg = ctx.kinds("status")[-1]["message"]
    assert "nv-eval/does-not-exist:1" in msg and "pulling it failed" in msg, msg



class _Env:
    """The parts of the agent's AgentEnv a runtime uses: id, runtime state, background tasks."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.states: dict[str, dict[str, Any]] = {}

    def runtime_state(self, name: str) -> dict[str, Any]:
        return dict(self.states.get(name, {}))

    def save_runtime_state(self, name: str, data: dict[str, Any]) -> None:
        self.states[name] = dict(data)

    def spawn(self, fn: Any) -> None:  # lingering is not exercised here
        pass


async def test_recover_removes_only_what_no_live_job_owns(docker_images: None, tmp_path: Path) -> None:
    """After a restart: this agent's containers of dead jobs and orphan deployments go; a live job's
    container and other agents' containers stay."""
    import secrets

    agent = f"rec-{secrets.token_hex(3)}"
    other = f"other-{secrets.token_hex(3)}"
    env = _Env(agent)
    jobs = plan(_doc(tmp_path, ["arc_challenge", "winogrande"], None, url="http://127.0.0.1:9/v1/completions"))
    inv = jobs[0].invocation_id
    rt = DockerRuntime(env)
    try:
        ctxs = [RecordingContext(j) for j in jobs]
        handles = [await rt.launch(c) for c in ctxs]
        for name, who in (("orphan", agent), ("foreign", other)):
            p = await anyio.run_process(
                ["docker", "run", "-d", "--name", f"nv-eval-test-{name}-{inv}", "--label", f"nv-eval.invocation={inv}",
                 "--label", "nv-eval.role=deployment", "--label", f"nv-eval.deployment-group={inv}.d{name}",
                 "--label", f"nv-eval.agent={who}", "nv-eval/harness:latest", "sh", "-c", "sleep 600"],
                check=False,
            )  # fmt: skip
            assert p.returncode == 0, p.stderr.decode()
        restarted = DockerRuntime(env)
        await restarted.recover({jobs[0].job_id: handles[0]})
        left = set(docker_ps(f"nv-eval.invocation={inv}"))
        assert handles[0]["container_id"] in left, "the live job's container stays"
        assert handles[1]["container_id"] not in left, "a dead job's container is removed"
        assert docker_ps(f"nv-eval.invocation={inv}", f"nv-eval.agent={other}"), "other agents' containers stay"
        assert not docker_ps(f"nv-eval.invocation={inv}", "nv-eval.role=deployment", f"nv-eval.agent={agent}")
        await restarted.aclose()
    finally:
        remove_labelled(f"nv-eval.invocation={inv}")
        await rt.aclose()
