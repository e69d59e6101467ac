"""The Docker runtime inside the real agent (``python -m nv_eval.agents --executor local``), real NATS,
real dockerd, the llama.cpp deployment container serving SmolLM2 and harness containers.

- kill mid-run: every container (model and benchmarks) gone within 10 s, jobs ``killed``;
- SIGKILL the agent mid-run and restart it: the run completes, each job's container and the
  model container were created once, nothing is left behind.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from nv_eval.protocol import (
    CancelJob,
    ControlReply,
    DeploymentEvent,
    JobSpec,
    LogEvent,
    ProgressEvent,
    Subjects,
    decode,
    encode,
)

from tests._support.docker import build_images, docker_ps, plan, remove_labelled, start_dockerd
from tests._support.services import SMOLLM2_MODEL_ID

from ._agent_helpers import EventCollector, publish_job, setup_bus, start_agent_process

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def docker_images() -> None:
    start_dockerd()
    build_images(harness=True, llamacpp=True)


def _jobs(tmp: Path, tasks: list[str], limit: int) -> list[JobSpec]:
    doc: dict[str, Any] = {
        "execution": {"type": "local", "runtime": "docker", "output_dir": str(tmp), "network": "bridge",
                      "max_parallel_tasks": 3},
        "deployment": {"type": "llamacpp", "n_threads": 2, "readiness_timeout": 120},
        "target": {"api_endpoint": {"model_id": SMOLLM2_MODEL_ID, "type": "completions"}},
        "evaluation": {"tasks": [{"name": t} for t in tasks], "params": {"limit_samples": limit}},
    }  # fmt: skip
    return plan(doc)


def _logged(col: EventCollector, job: JobSpec) -> bool:
    """The job's container runs and has written to stderr (or reported progress)."""
    return any(isinstance(e, ProgressEvent) or (isinstance(e, LogEvent) and e.stream == "stderr") for e in col.of(job.job_id))


class ContainerWatch:
    """Records every container id seen per label value (polling ``docker ps``)."""

    def __init__(self, invocation_id: str) -> None:
        self.inv = invocation_id
        self.by_job: dict[str, set[str]] = {}
        self.models: set[str] = set()

    async def run(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            await anyio.to_thread.run_sync(self.poll)
            await anyio.sleep(0.3)

    def poll(self) -> None:
        import subprocess

        out = subprocess.run(
            ["docker", "ps", "-a", "--no-trunc", "--filter", f"label=nv-eval.invocation={self.inv}",
             "--format", '{{.ID}} {{.Label "nv-eval.role"}} {{.Label "nv-eval.job"}}'],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "deployment":
                self.models.add(parts[0])
            elif len(parts) == 3:
                self.by_job.setdefault(parts[2], set()).add(parts[0])


async def test_agent_kill_mid_run_removes_every_container(
    docker_images: None, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    jobs = _jobs(tmp_path, ["arc_challenge", "hellaswag", "winogrande"], limit=100)
    inv = jobs[0].invocation_id
    agent = start_agent_process(nats_url, prefix, tmp_path / "agent", agent_id="dk-kill")
    try:
        for j in jobs:
            await publish_job(js, prefix, j)
        await col.wait_for(lambda: all(_logged(col, j) for j in jobs), 300, "every harness container logging")
        t0 = time.monotonic()
        kv = await js.key_value(Subjects(prefix).cancel_bucket)
        for j in jobs:  # what the daemon does on kill: the KV key and the control request
            await kv.put(j.job_id, b"killed by test")
            msg = await nc.request(Subjects(prefix).control("dk-kill"), encode(CancelJob(job_id=j.job_id)), timeout=5)
            assert decode(msg.data, ControlReply).ok
        with anyio.fail_after(10):
            while docker_ps(f"nv-eval.invocation={inv}"):
                await anyio.sleep(0.1)
        gone_s = time.monotonic() - t0
        assert gone_s < 10
        await col.wait_for(lambda: all(col.terminal(j.job_id) is not None for j in jobs), 10, "terminal states")
        assert {col.terminal(j.job_id).state for j in jobs} == {"killed"}  # type: ignore[union-attr]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        remove_labelled(f"nv-eval.invocation={inv}")
        await nc.close()


async def test_agent_sigkill_and_restart_completes_without_rerun(
    docker_images: None, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    jobs = _jobs(tmp_path, ["arc_challenge", "winogrande"], limit=2)
    inv = jobs[0].invocation_id
    watch = ContainerWatch(inv)
    stop = anyio.Event()
    data = tmp_path / "agent"
    agent = start_agent_process(nats_url, prefix, data, agent_id="dk-re")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run, stop)
            for j in jobs:
                await publish_job(js, prefix, j)
            await col.wait_for(lambda: all(_logged(col, j) for j in jobs), 300, "every harness container logging")
            agent.send_signal(signal.SIGKILL)
            agent.wait(5)
            await anyio.sleep(2)  # containers keep running while the agent is down
            assert docker_ps(f"nv-eval.invocation={inv}", "nv-eval.role=benchmark")
            agent = start_agent_process(nats_url, prefix, data, agent_id="dk-re")
            await col.wait_for(lambda: all(col.terminal(j.job_id) is not None for j in jobs), 400, "completion")
            with anyio.fail_after(40):  # teardown follows the terminal event
                while docker_ps(f"nv-eval.invocation={inv}"):
                    await anyio.sleep(0.2)
            stop.set()
        for j in jobs:
            term = col.terminal(j.job_id)
            assert term is not None and term.state == "succeeded", col.dump()
            assert len(watch.by_job.get(j.job_id, ())) == 1, "each job's container was created once"
            assert (Path(j.task_dir) / "results.json").exists()
        assert len(watch.models) == 1, "one model container for the whole invocation"
        starts = [e for j in jobs for e in col.of(j.job_id) if isinstance(e, DeploymentEvent) and e.state == "starting"]
        assert len(starts) == 1
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        remove_labelled(f"nv-eval.invocation={inv}")
        await nc.close()
