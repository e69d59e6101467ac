"""Helpers for the daemon tests: start the daemon in-process, talk to it as a client and as an agent.

Nothing here is a fake: the daemon is the real one, on the real nats-server of the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.client import Client as NATS
from nv_eval.daemon import Ready, Settings, serve
from nv_eval.protocol import (
    ApiEndpoint,
    ApiError,
    EvaluationConfig,
    Event,
    Heartbeat,
    JobSpec,
    LocalExecution,
    RunConfig,
    RunRequest,
    StatusEvent,
    Subjects,
    TargetConfig,
    TaskConfig,
    decode,
    encode,
    event_msg_id,
    load_registry,
)


@asynccontextmanager
async def daemon(nats_url: str, prefix: str, data_dir: Path, **kw: Any) -> AsyncIterator[Ready]:
    settings = Settings(nats_url=nats_url, prefix=prefix, data_dir=data_dir, **kw)
    async with anyio.create_task_group() as tg:
        ready: Ready = await tg.start(serve, settings)
        try:
            yield ready
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def connect(nats_url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


async def call(nc: NATS, prefix: str, verb: str, req: Any, reply_type: Any, timeout: float = 10) -> Any:
    data = req if isinstance(req, bytes) else encode(req)
    msg = await nc.request(Subjects(prefix).api(verb), data, timeout=timeout)
    return decode(msg.data, reply_type | ApiError)


def run_request(output_dir: Path, tasks: list[str], *, max_redispatch: int = 1, pool: str = "default") -> RunRequest:
    reg = load_registry()
    cfg = RunConfig(
        execution=LocalExecution(runtime="process", output_dir=str(output_dir), max_redispatch=max_redispatch, pool=pool),
        target=TargetConfig(api_endpoint=ApiEndpoint(url="http://127.0.0.1:9/v1/completions", model_id="m")),
        evaluation=EvaluationConfig(tasks=[TaskConfig(name=t) for t in tasks]),
    )
    return RunRequest(config=cfg, tasks=[reg[t] for t in tasks], raw_config={"execution": {"type": "local"}})


async def event_history(nc: NATS, prefix: str, invocation_id: str, *, idle: float = 0.5) -> list[tuple[Event, str]]:
    """Every event of an invocation in the stream, in stream order, with its Nats-Msg-Id header."""
    js = nc.jetstream()
    sub = await js.subscribe(Subjects(prefix).events_of_invocation(invocation_id), ordered_consumer=True)
    out: list[tuple[Event, str]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, nats.errors.TimeoutError):
                return out
            out.append((decode(msg.data, Event), (msg.headers or {}).get("Nats-Msg-Id", "")))
    finally:
        await sub.unsubscribe()


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy; fail after ``timeout``."""
    last = None
    with anyio.fail_after(timeout):
        while True:
            last = await predicate()
            if last:
                return last
            await anyio.sleep(interval)


ATTEMPT_SEQ_BASE = 1_000_000


class FakeAgentIO:
    """Publishes what an agent publishes (events, heartbeats) using the real protocol."""

    def __init__(self, nc: NATS, prefix: str, agent_id: str = "agent-1") -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = Subjects(prefix)
        self.agent_id = agent_id
        self.seq: dict[str, int] = {}

    async def take_jobs(self, n: int, executor: str = "local", pool: str = "default", timeout: float = 5) -> list[JobSpec]:
        psub = await self.js.pull_subscribe(
            self.subjects.jobs(executor, pool),
            durable=self.subjects.jobs_consumer(executor, pool),
            stream=self.subjects.jobs_stream,
        )
        out: list[JobSpec] = []
        with anyio.fail_after(timeout):
            while len(out) < n:
                try:
                    msgs = await psub.fetch(n - len(out), timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for m in msgs:
                    out.append(decode(m.data, JobSpec))
                    await m.ack()
        return out

    async def emit(self, ev_type: type, spec: JobSpec, **fields: Any) -> Event:
        # like the real agents: attempt N numbers its events from (N-1) * ATTEMPT_SEQ_BASE
        seq = max(self.seq.get(spec.job_id, 0), (spec.attempt - 1) * ATTEMPT_SEQ_BASE) + 1
        self.seq[spec.job_id] = seq
        ev = ev_type(
            invocation_id=spec.invocation_id,
            job_id=spec.job_id,
            seq=seq,
            ts=time.time(),
            source=self.agent_id,
            msg_id=event_msg_id(spec.job_id, seq),
            **fields,
        )
        kind = ev_type.__struct_config__.tag
        await self.js.publish(
            self.subjects.event(spec.invocation_id, spec.index, kind), encode(ev), headers={"Nats-Msg-Id": ev.msg_id}
        )
        return ev

    async def status(self, spec: JobSpec, state: str, **fields: Any) -> Event:
        return await self.emit(StatusEvent, spec, state=state, attempt=spec.attempt, **fields)

    async def heartbeat(self, running: list[str], interval: float = 0.2) -> None:
        hb = Heartbeat(
            agent_id=self.agent_id,
            executor="local",
            pool="default",
            hostname="test",
            capabilities=["process"],
            running_jobs=running,
            started_at=time.time(),
            ts=time.time(),
            interval_s=interval,
        )
        await self.nc.publish(self.subjects.heartbeat(self.agent_id), encode(hb))


def start_daemon_process(nats_url: str, prefix: str, data_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "nv_eval.daemon", "--nats-url", nats_url, "--prefix", prefix, "--data-dir", str(data_dir)]
    return subprocess.Popen([*cmd, *extra], stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ))


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
