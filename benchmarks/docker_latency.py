"""Docker runtime latency: launch -> first log event of the benchmark container (image present,
no deployment), and the model cold start a shared llama.cpp deployment saves for 3 tasks.

Usage: python benchmarks/docker_latency.py [--runs 7] [--deployment]
Needs a running dockerd and the images (`nv-eval images build --harness --llamacpp`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import anyio
from nv_eval.agents.local._docker import DockerRuntime
from nv_eval.protocol import JobSpec, load_registry, new_invocation_id, plan_invocation, validate_run_config


class TimingContext:
    """A JobContext that timestamps the first log event and the deployment's ready event."""

    def __init__(self, job: JobSpec) -> None:
        self.job = job
        self.agent_id = "bench"
        self.cancelled = anyio.Event()
        self.first_log = anyio.Event()
        self.t_first_log = 0.0
        self.t_ready = 0.0
        self.t_starting = 0.0
        self.handle: dict[str, Any] = {}

    async def status(self, *a: Any, **k: Any) -> None: ...
    async def progress(self, *a: Any, **k: Any) -> None: ...
    async def result(self, *a: Any, **k: Any) -> None: ...

    async def log(self, lines: Sequence[str], stream: str = "stdout") -> None:
        if stream in ("stdout", "stderr") and not self.first_log.is_set():
            self.t_first_log = time.perf_counter()
            self.first_log.set()

    async def deployment(self, deployment_id: str, state: str, **k: Any) -> None:
        if state == "starting":
            self.t_starting = time.perf_counter()
        if state == "ready" and not self.t_ready:
            self.t_ready = time.perf_counter()

    async def save_handle(self, handle: dict[str, Any]) -> None:
        self.handle = dict(handle)

    def stage_handle(self, handle: dict[str, Any]) -> None:
        self.handle = dict(handle)


def _jobs(out: str, tasks: list[str], deployment: dict[str, Any] | None) -> list[JobSpec]:
    doc: dict[str, Any] = {
        "execution": {"type": "local", "runtime": "docker", "output_dir": out, "network": "host"},
        "target": {"api_endpoint": {"model_id": "smollm2-135m-instruct", "type": "completions"}},
        "evaluation": {"tasks": [{"name": t} for t in tasks], "params": {"limit_samples": 1}},
    }
    if deployment:
        doc["deployment"] = deployment
    else:
        doc["target"]["api_endpoint"]["url"] = "http://127.0.0.1:9/v1/completions"
    cfg = validate_run_config(doc)
    reg = load_registry()
    return plan_invocation(new_invocation_id(), cfg, [reg[t.name] for t in cfg.evaluation.tasks])


async def first_log_latency(runs: int) -> list[float]:
    rt = DockerRuntime()
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            (job,) = _jobs(tmp, ["arc_challenge"], None)
            ctx = TimingContext(job)
            t0 = time.perf_counter()
            handle = await rt.launch(ctx)  # type: ignore[arg-type]
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.watch, ctx, handle)  # type: ignore[arg-type]
                with anyio.fail_after(60):
                    await ctx.first_log.wait()
                out.append(ctx.t_first_log - t0)
                ctx.cancelled.set()
                await rt.stop(ctx, handle)  # type: ignore[arg-type]
            await rt.teardown(ctx, ctx.handle)  # type: ignore[arg-type]
    await rt.aclose()
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def cold_start() -> float:
    """Seconds from deployment `starting` to `ready` for the llama.cpp container (one cold start)."""
    rt = DockerRuntime()
    with tempfile.TemporaryDirectory() as tmp:
        (job,) = _jobs(tmp, ["arc_challenge"], {"type": "llamacpp", "n_threads": 2, "readiness_timeout": 120, "port": _free_port()})
        ctx = TimingContext(job)
        try:
            base = await rt.deployments.acquire(ctx)  # type: ignore[arg-type]
            assert base
        finally:
            await rt.deployments.release(None, job.deployment_group or "", job.job_id, killed=True)
            await rt.aclose()
    return ctx.t_ready - ctx.t_starting


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--deployment", action="store_true", help="also time one llama.cpp cold start")
    a = ap.parse_args()
    lat = anyio.run(first_log_latency, a.runs)
    print(f"launch -> first log event (no deployment, image present), {a.runs} runs: "
          f"median {statistics.median(lat):.2f}s, min {min(lat):.2f}s, max {max(lat):.2f}s")  # fmt: skip
    if a.deployment:
        cs = anyio.run(cold_start)
        print(f"llama.cpp deployment cold start: {cs:.2f}s; 3 tasks with one shared deployment save "
              f"2 cold starts = {2 * cs:.2f}s (the anchor launcher starts one per task)")  # fmt: skip


if __name__ == "__main__":
    main()
