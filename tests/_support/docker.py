"""Docker test support: a real dockerd, the images built locally, jobs planned by the real planner,
and a JobContext that records every event (for driving a runtime directly).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
from nv_eval.protocol import JobSpec, Results, load_registry, new_invocation_id, plan_invocation, validate_run_config

REPO = Path(__file__).resolve().parents[2]


def start_dockerd() -> None:
    """Start dockerd with the project's script (idempotent, bounded)."""
    p = subprocess.run([str(REPO / "scripts/start-dockerd.sh")], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"dockerd did not start: {p.stderr.strip()}")


def build_images(harness: bool = True, llamacpp: bool = True) -> str:
    """Build the harness/llamacpp images (cached layers: ~2 s when nothing changed)."""
    args = [sys.executable, str(REPO / "harness/image/build.py")]
    if harness:
        args.append("--harness")
    if llamacpp:
        args.append("--llamacpp")
    p = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"image build failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return p.stdout


def docker_ps(*labels: str) -> list[str]:
    """Ids of containers (running or not) carrying every one of ``labels`` (``key=value``)."""
    args = ["docker", "ps", "-aq", "--no-trunc"]
    for label in labels:
        args += ["--filter", f"label={label}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.split()


def docker_networks(label: str) -> list[str]:
    return subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={label}"], capture_output=True,
                          text=True, timeout=30).stdout.split()  # fmt: skip


def remove_labelled(label: str) -> None:
    ids = docker_ps(label)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={label}"], capture_output=True,
                          text=True, timeout=30).stdout.split()  # fmt: skip
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True, timeout=60)


def plan(doc: dict[str, Any], invocation_id: str | None = None) -> list[JobSpec]:
    """Jobs for a config document, planned exactly as the daemon does."""
    cfg = validate_run_config(doc)
    reg = load_registry()
    entries = [reg[t.name] for t in cfg.evaluation.tasks]
    return plan_invocation(invocation_id or new_invocation_id(), cfg, entries)


class RecordingContext:
    """A JobContext that records events in memory (and the handle, like the agent's state)."""

    def __init__(self, job: JobSpec, agent_id: str = "test-agent") -> None:
        self.job = job
        self.agent_id = agent_id
        self.cancelled = anyio.Event()
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.handle: dict[str, Any] | None = None
        self.saved_handle: dict[str, Any] | None = None

    def _add(self, kind: str, **fields: Any) -> None:
        self.events.append((time.monotonic(), kind, fields))
        if self.handle is not None:
            self.saved_handle = dict(self.handle)  # staged offsets persist with each event

    async def status(self, state: str, message: str | None = None, failure_kind: str | None = None,
                     exit_code: int | None = None) -> None:  # fmt: skip
        self._add("status", state=state, message=message, failure_kind=failure_kind, exit_code=exit_code)

    async def log(self, lines: Sequence[str], stream: Literal["stdout", "stderr", "deployment", "agent"] = "stdout") -> None:
        self._add("log", lines=list(lines), stream=stream)

    async def progress(self, done: int, total: int, rps: float | None = None, eta_s: float | None = None) -> None:
        self._add("progress", done=done, total=total)

    async def result(self, results: Results) -> None:
        self._add("result", results=results)

    async def deployment(self, deployment_id: str, state: str, url: str | None = None, message: str | None = None,
                         last_logs: Sequence[str] = ()) -> None:  # fmt: skip
        self._add("deployment", id=deployment_id, state=state, url=url, message=message, last_logs=list(last_logs))

    async def save_handle(self, handle: dict[str, Any]) -> None:
        self.handle = dict(handle)
        self.saved_handle = dict(handle)

    def stage_handle(self, handle: dict[str, Any]) -> None:
        self.handle = dict(handle)

    # -------------------------------------------------------------- queries
    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [f for _, k, f in self.events if k == kind]

    def states(self) -> list[str]:
        return [f["state"] for f in self.kinds("status")]

    def log_lines(self, stream: str | None = None) -> list[str]:
        return [ln for f in self.kinds("log") if stream in (None, f["stream"]) for ln in f["lines"]]

    def results(self) -> Results | None:
        rs = self.kinds("result")
        return rs[-1]["results"] if rs else None


def results_file(job: JobSpec) -> Results:
    return msgspec.json.decode((Path(job.task_dir) / "results.json").read_bytes(), type=Results)
