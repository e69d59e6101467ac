"""Helpers for the agent integration tests: bus resources, job specs, an event collector, agent processes.

Everything is real: the nats-server of the session fixture, JetStream streams created here
the way the daemon creates them, agents run as real ``python -m nv_eval.agents`` processes
(or in-process), jobs run the stand-in harness script as real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy
from nv_eval.protocol import (
    EndpointSpec,
    Event,
    JobSpec,
    LocalExecution,
    StatusEvent,
    Subjects,
    TaskEntry,
    TaskParams,
    decode,
    encode,
    job_id,
    new_invocation_id,
)

STAND_IN = Path(__file__).parent / "agent_jobs" / "stand_in_harness.py"
STAND_IN_CMD = f"{sys.executable} {STAND_IN}"


async def setup_bus(nats_url: str, prefix: str) -> tuple[NATS, Any]:
    """Connect and create what the daemon would: jobs stream, events stream, cancel bucket."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    s = Subjects(prefix)
    await js.add_stream(name=s.jobs_stream, subjects=[s.jobs_all()], retention=RetentionPolicy.WORK_QUEUE)
    await js.add_stream(name=s.events_stream, subjects=[s.events_all()])
    await js.create_key_value(bucket=s.cancel_bucket)
    return nc, js


def make_job(
    tmp: Path,
    *,
    invocation_id: str | None = None,
    index: int = 0,
    extra: dict[str, Any] | None = None,
    endpoint_url: str | None = "http://127.0.0.1:9/v1/completions",
    model_id: str = "stand-in-model",
    task: str = "hellaswag",
    params: TaskParams | None = None,
    api_key_name: str | None = "STANDIN_KEY",
    **kw: Any,
) -> JobSpec:
    inv = invocation_id or new_invocation_id()
    jid = job_id(inv, index)
    task_dir = tmp / inv / f"{task}-{index}"
    return JobSpec(
        job_id=jid,
        invocation_id=inv,
        index=index,
        task=TaskEntry(name=task),
        params=params or TaskParams(extra=extra or {}),
        endpoint=EndpointSpec(url=endpoint_url, model_id=model_id, type="completions", api_key_name=api_key_name),
        execution=kw.pop("execution", LocalExecution(runtime="process", output_dir=str(tmp))),
        invocation_dir=str(tmp / inv),
        task_dir=str(task_dir),
        **kw,
    )


async def publish_job(js: Any, prefix: str, job: JobSpec, executor: str = "local", pool: str = "default") -> None:
    await js.publish(Subjects(prefix).jobs(executor, pool), encode(job))


class EventCollector:
    """Collects every event of the test's prefix from the events stream (de-duplicated view kept raw)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sub: Any = None

    async def start(self, js: Any, prefix: str) -> None:
        async def cb(msg: Any) -> None:
            self.events.append(decode(msg.data, Event))
            await msg.ack()

        s = Subjects(prefix)
        self.sub = await js.subscribe(s.events_all(), cb=cb, ordered_consumer=True)

    def of(self, job_id: str) -> list[Event]:
        return [e for e in self.events if e.job_id == job_id]

    def states(self, job_id: str) -> list[str]:
        return [e.state for e in self.of(job_id) if isinstance(e, StatusEvent)]

    def terminal(self, job_id: str) -> StatusEvent | None:
        for e in self.of(job_id):
            if isinstance(e, StatusEvent) and e.state in ("succeeded", "failed", "killed"):
                return e
        return None

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        with anyio.move_on_after(timeout):
            while not pred():
                await anyio.sleep(0.05)
            return
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; events: {self.dump()}")

    def dump(self) -> str:
        return "\n".join(msgspec.json.encode(e).decode()[:300] for e in self.events[-40:])


def start_agent_process(
    nats_url: str, prefix: str, data_dir: Path, *, agent_id: str, max_jobs: int = 4, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m nv_eval.agents`` as a real process (stderr to ``data_dir/agent.log``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "NV_EVAL_HARNESS_CMD": STAND_IN_CMD, **(env or {})}
    log = (data_dir / "agent.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "nv_eval.agents",
            "--executor", "local", "--nats-url", nats_url, "--prefix", prefix,
            "--data-dir", str(data_dir), "--agent-id", agent_id, "--max-jobs", str(max_jobs),
            "--heartbeat-interval", "0.5",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
    )


def pid_alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st[st.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not pid_alive(pid):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive after {timeout}s")
