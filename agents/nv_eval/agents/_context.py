"""The JobContext given to runtimes: every call becomes one typed event on JetStream.

Events of one job are serialized (a lock), numbered with the job's persisted ``seq``
(persisted *before* publishing, so a restarted agent never reuses a number) and published
with ``Nats-Msg-Id = event_msg_id(job_id, seq)`` so JetStream drops duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import anyio
import structlog
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from nv_eval.protocol import (
    DeploymentEvent,
    Event,
    FailureKind,
    JobSpec,
    JobState,
    LogEvent,
    ProgressEvent,
    ProtocolError,
    ResultEvent,
    Results,
    StatusEvent,
    Subjects,
    decode,
    encode,
    event_msg_id,
)

from ._state import AgentState, JobEntry

log = structlog.get_logger("nv_eval.agents.events")

MAX_LOG_LINES_PER_EVENT = 500
MAX_LINE_CHARS = 8192


class EventPublisher:
    """Publishes events to the events stream with de-duplication ids and bounded retries."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, *, timeout: float = 5.0, give_up_after: float = 300.0):
        self.js = js
        self.subjects = subjects
        self.timeout = timeout
        self.give_up_after = give_up_after

    async def publish(self, event: Event) -> bool:
        kind = type(event).__name__  # for logs only
        subject = self.subjects.event(event.invocation_id, _job_index(event.job_id), _kind(event))
        data = encode(event)
        headers = {"Nats-Msg-Id": event.msg_id}
        deadline = time.monotonic() + self.give_up_after
        delay = 0.2
        while True:
            try:
                await self.js.publish(subject, data, timeout=self.timeout, headers=headers)
                return True
            except (
                NatsTimeoutError,
                NoRespondersError,
                NoStreamResponseError,
                ConnectionClosedError,
                OutboundBufferLimitError,
                APIError,
                TimeoutError,
            ) as e:
                if time.monotonic() > deadline:
                    log.error("event dropped after retries", msg_id=event.msg_id, kind=kind, error=repr(e))
                    return False
                log.warning("event publish failed, retrying", msg_id=event.msg_id, error=repr(e))
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _kind(event: Event) -> str:
    return {
        StatusEvent: "status",
        ProgressEvent: "progress",
        LogEvent: "log",
        ResultEvent: "result",
        DeploymentEvent: "deployment",
    }[type(event)]


def _job_index(job_id: str) -> str:
    return job_id.rsplit(".", 1)[-1]


class AgentJobContext:
    """JobContext implementation (see ``nv_eval.agents.JobContext``) used by the base loop."""

    def __init__(self, entry: JobEntry, agent_id: str, state: AgentState, publisher: EventPublisher) -> None:
        self.entry = entry
        self.job: JobSpec = entry.job
        self.agent_id = agent_id
        self.cancelled = anyio.Event()
        self.cancel_reason: str | None = None
        self._state = state
        self._pub = publisher
        self._lock = anyio.Lock()
        self.last_state: str | None = None
        self.last_published = False
        self.logger = structlog.get_logger("nv_eval.agents.job").bind(job_id=self.job.job_id, agent_id=agent_id)

    # ------------------------------------------------------------------ plumbing
    async def _emit(self, cls: type[Any], **fields: Any) -> None:
        async with self._lock:
            self.entry.seq += 1
            seq = self.entry.seq
            ev = cls(
                invocation_id=self.job.invocation_id,
                job_id=self.job.job_id,
                seq=seq,
                ts=time.time(),
                source=self.agent_id,
                msg_id=event_msg_id(self.job.job_id, seq),
                **fields,
            )
            # outbox: the event (and its seq) is persisted before publishing; it leaves the outbox once
            # JetStream acknowledged it. A restarted agent re-sends what is left (same msg id: no duplicate).
            data = encode(ev).decode()
            self.entry.outbox.append(data)
            self._state.save(self.entry, durable=False)
            self.last_published = await self._pub.publish(ev)
            if self.last_published:
                self.entry.outbox.remove(data)

    async def flush_outbox(self) -> bool:
        """Re-send events persisted but not acknowledged before a restart; True when none is left."""
        async with self._lock:
            for data in list(self.entry.outbox):
                try:
                    ev = decode(data, Event)
                except ProtocolError as e:
                    self.logger.error("unreadable outbox event dropped", error=str(e))
                    self.entry.outbox.remove(data)
                    continue
                if not await self._pub.publish(ev):
                    break
                self.entry.outbox.remove(data)
            self._state.save(self.entry, durable=False)
            return not self.entry.outbox

    # ------------------------------------------------------------------ JobContext API
    async def status(
        self,
        state: JobState,
        message: str | None = None,
        failure_kind: FailureKind | None = None,
        exit_code: int | None = None,
    ) -> None:
        if state in ("deploying", "running") and state == self.last_state:
            return  # idempotent for runtimes that report the same state twice
        self.last_state = state
        if state in ("deploying", "running"):
            self.entry.state = state
        if state == "running" and self.entry.handle is not None:
            # the runtime saved its handle and reports the job running: the launch is complete even
            # if the agent dies before `launch` returns, so a restart re-attaches instead of failing it
            self.entry.launched = True
        await self._emit(
            StatusEvent,
            state=state,
            message=message,
            failure_kind=failure_kind,
            exit_code=exit_code,
            attempt=self.job.attempt,
        )

    async def log(
        self, lines: Sequence[str], stream: Literal["stdout", "stderr", "deployment", "agent"] = "stdout"
    ) -> None:
        lines = [ln if len(ln) <= MAX_LINE_CHARS else ln[:MAX_LINE_CHARS] + "…" for ln in lines]
        for i in range(0, len(lines), MAX_LOG_LINES_PER_EVENT):
            chunk = lines[i : i + MAX_LOG_LINES_PER_EVENT]
            if chunk:
                await self._emit(LogEvent, stream=stream, lines=chunk)

    async def progress(self, done: int, total: int, rps: float | None = None, eta_s: float | None = None) -> None:
        await self._emit(ProgressEvent, done=done, total=total, rps=rps, eta_s=eta_s)

    async def result(self, results: Results) -> None:
        await self._emit(ResultEvent, results=results)

    async def deployment(
        self,
        deployment_id: str,
        state: Literal["starting", "loading", "ready", "failed", "stopped"],
        url: str | None = None,
        message: str | None = None,
        last_logs: Sequence[str] = (),
    ) -> None:
        await self._emit(
            DeploymentEvent,
            deployment_id=deployment_id,
            state=state,
            url=url,
            message=message,
            last_logs=list(last_logs),
        )

    async def save_handle(self, handle: dict[str, Any]) -> None:
        self.entry.handle = dict(handle)
        self._state.save(self.entry)

    def stage_handle(self, handle: dict[str, Any]) -> None:
        self.entry.handle = dict(handle)
