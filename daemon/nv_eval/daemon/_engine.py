"""The daemon's actions: run (plan, persist, dispatch), kill, resume, lost-agent handling, recovery.

Every transition the daemon makes is an event it publishes to the events stream first (with a
deterministic ``Nats-Msg-Id`` of ``<job_id>:d<attempt>-<state>``) and then folds into the store
itself, exactly as the stream consumer would; the consumer later drops it as a duplicate. A crash
between the two steps therefore leaves either nothing or a replayable event, and a retried step
republishes under the same message id (JetStream and the fold both de-duplicate it).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import anyio
import msgspec
import yaml
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nv_eval.protocol import (
    TERMINAL_STATES,
    ApiError,
    CancelJob,
    ControlReply,
    FailureKind,
    InvocationRecord,
    JobRecord,
    JobSpec,
    JobState,
    KillReply,
    ResumeReply,
    RunReply,
    RunRequest,
    SlurmExecution,
    StatusEvent,
    Subjects,
    decode,
    encode,
    executor_name,
    new_invocation_id,
    plan_invocation,
)
from nv_eval.protocol.ids import INVOCATION_ID_RE
from nv_eval.protocol.logsetup import get_logger

from ._agents import AgentTracker
from ._bus import publish_event, publish_job
from ._store import ACTIVE_STATES, Store

log = get_logger("nv_eval.daemon.engine")

CANCEL_TIMEOUT = 5.0
STALE_PENDING_S = 5.0  # a job still pending this long after its last change is dispatched again
RESUMABLE = frozenset({"failed", "killed", "lost"})


class ApiFailure(Exception):
    """Raised inside an action to answer the request with a typed :class:`ApiError`."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def daemon_msg_id(job_id: str, attempt: int, state: str) -> str:
    return f"{job_id}:d{attempt}-{state}"


class Engine:
    """State transitions owned by the daemon. All of them run under one lock."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, kv: KeyValue, store: Store, subjects: Subjects, tracker: AgentTracker
    ) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.store = store
        self.subjects = subjects
        self.tracker = tracker
        self.lock = anyio.Lock()
        self._dispatch_send, self.dispatch_receive = anyio.create_memory_object_stream[str](max_buffer_size=math.inf)

    # ------------------------------------------------------------------ events

    async def emit(
        self,
        rec: JobRecord,
        state: JobState,
        *,
        attempt: int | None = None,
        message: str | None = None,
        failure_kind: FailureKind | None = None,
    ) -> JobRecord:
        """Publish a daemon status event for ``rec`` and fold it into the store."""
        rec = self.store.job(rec.job_id) or rec  # current last_seq/attempt
        att = rec.attempt if attempt is None else attempt
        ev = StatusEvent(
            invocation_id=rec.invocation_id,
            job_id=rec.job_id,
            seq=rec.last_seq + 1,
            ts=time.time(),
            source="daemon",
            msg_id=daemon_msg_id(rec.job_id, att, state),
            state=state,
            message=message,
            failure_kind=failure_kind,
            attempt=att,
        )
        await publish_event(self.js, self.subjects, ev, rec.index)
        res = self.store.apply(ev)
        log.info("job state", job_id=rec.job_id, state=state, attempt=att, applied=res.applied, reason=res.reason)
        # the fold may have applied our own event first (then ``res`` is a duplicate): read back
        return self.store.job(rec.job_id) or rec

    # ------------------------------------------------------------------ run

    async def run(self, req: RunRequest) -> RunReply:
        from nv_eval.protocol import PlanError

        inv_id = req.invocation_id or new_invocation_id()
        if not INVOCATION_ID_RE.match(inv_id):
            raise ApiFailure(ApiError(code="bad_request", message=f"invocation_id {inv_id!r}: expected 16 hex chars"))
        if self.store.invocation(inv_id) is not None:
            raise ApiFailure(ApiError(code="conflict", message=f"invocation {inv_id} already exists"))
        try:
            specs = plan_invocation(inv_id, req.config, req.tasks)
        except PlanError as e:
            raise ApiFailure(ApiError(code="bad_request", message=str(e))) from None
        now = time.time()
        self._write_config(req, specs[0])
        inv = self.store.add_invocation(specs, specs[0].endpoint.model_id, req.config.execution.output_dir, now)
        log.info("invocation planned", invocation_id=inv_id, jobs=len(specs), executor=inv.executor)
        self._dispatch_send.send_nowait(inv_id)
        return RunReply(invocation=inv)

    def _write_config(self, req: RunRequest, spec: JobSpec) -> None:
        ex = spec.execution
        if isinstance(ex, SlurmExecution) and ex.hostname:
            return  # remote cluster: the client (or the agent) writes it there
        path = os.path.join(spec.invocation_dir, "config.yaml")
        raw = req.raw_config or msgspec.to_builtins(req.config)
        try:
            os.makedirs(spec.invocation_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(raw, f, sort_keys=False)
        except OSError as e:
            log.warning("config.yaml not written", path=path, error=str(e))

    async def dispatch_pending(self, invocation_id: str | None = None, older_than: float | None = None) -> list[str]:
        """Dispatch every job still ``pending`` (of one invocation, or all: after a restart, or
        those left behind ``older_than`` seconds ago by a failed publish)."""
        out: list[str] = []
        async with self.lock:
            if invocation_id is None:
                jobs = self.store.jobs_in_states(["pending"])
                if older_than is not None:
                    cutoff = time.time() - older_than
                    jobs = [j for j in jobs if j.updated_at < cutoff]
            else:
                jobs = [j for j in self.store.jobs_of(invocation_id) if j.state == "pending"]
            for rec in jobs:
                spec = self.store.spec(rec.job_id)
                if spec is None:
                    continue
                rec = await self.emit(rec, "pending")
                await publish_job(self.js, self.subjects, spec, executor_name(spec.execution))
                await self.emit(rec, "dispatched", attempt=spec.attempt)
                out.append(rec.job_id)
        return out

    async def dispatcher(self) -> None:
        """Task: dispatch invocations handed over by :meth:`run`, in order."""
        async with self.dispatch_receive:
            async for inv_id in self.dispatch_receive:
                try:
                    await self.dispatch_pending(inv_id)
                except Exception:  # noqa: BLE001 - keep serving; the jobs stay pending and are retried
                    log.exception("dispatch failed", invocation_id=inv_id)

    async def _redispatch(self, rec: JobRecord, *, clear_cancel: bool) -> JobRecord:
        spec = self.store.spec(rec.job_id)
        assert spec is not None
        new = msgspec.structs.replace(spec, attempt=rec.attempt + 1)
        self.store.set_spec(new)
        if clear_cancel:
            try:
                await self.kv.delete(rec.job_id)
            except Exception as e:  # noqa: BLE001
                log.warning("cancel key not deleted", job_id=rec.job_id, error=str(e))
        await publish_job(self.js, self.subjects, new, executor_name(new.execution))
        self.tracker.forget_job(rec.job_id)
        return await self.emit(rec, "dispatched", attempt=new.attempt)

    # ------------------------------------------------------------------ lookups

    def lookup(self, text: str) -> tuple[InvocationRecord, str | None]:
        from ._store import Ambiguous, BadId, NotFound

        try:
            inv_id, jid = self.store.resolve(text)
        except BadId as e:
            raise ApiFailure(ApiError(code="bad_request", message=str(e))) from None
        except NotFound as e:
            raise ApiFailure(ApiError(code="not_found", message=str(e))) from None
        except Ambiguous as e:
            raise ApiFailure(ApiError(code="ambiguous", message=str(e))) from None
        inv = self.store.invocation(inv_id)
        if inv is None:
            raise ApiFailure(ApiError(code="not_found", message=f"no invocation matches {text!r}"))
        return inv, jid

    # ------------------------------------------------------------------ kill / resume

    async def kill(self, text: str) -> KillReply:
        inv, jid = self.lookup(text)
        targets = [j for j in inv.jobs if jid is None or j.job_id == jid]
        killed: list[str] = []
        to_cancel: list[tuple[str, str]] = []
        async with self.lock:
            for j in targets:
                rec = self.store.job(j.job_id)
                if rec is None or rec.state in TERMINAL_STATES:
                    continue
                await self.kv.put(rec.job_id, b"killed")
                rec = self.store.job(rec.job_id) or rec  # the fold may have moved on meanwhile
                if rec.state in TERMINAL_STATES:
                    continue
                killed.append(rec.job_id)
                if rec.agent_id and rec.state in ("deploying", "running", "dispatched"):
                    to_cancel.append((rec.agent_id, rec.job_id))
                else:
                    await self.emit(rec, "killed", message="killed by user before an agent picked it up")
        async with anyio.create_task_group() as tg:
            for agent_id, job in to_cancel:
                tg.start_soon(self.cancel_on_agent, agent_id, job, True)
        log.info("kill", invocation_id=inv.invocation_id, killed=killed)
        return KillReply(invocation_id=inv.invocation_id, killed=killed)

    async def cancel_on_agent(self, agent_id: str, job_id: str, fallback: bool = True) -> bool:
        """Ask ``agent_id`` to cancel ``job_id``; if it does not confirm, mark the job killed ourselves."""
        error: str | None = None
        try:
            msg = await self.nc.request(
                self.subjects.control(agent_id), encode(CancelJob(job_id=job_id)), timeout=CANCEL_TIMEOUT
            )
            reply = decode(msg.data, ControlReply)
            if not reply.ok:
                error = reply.error or "refused"
        except Exception as e:  # noqa: BLE001 - timeout, no responders, malformed reply
            error = f"{type(e).__name__}: {e}"
        if error is None:
            return True
        log.warning("agent did not confirm cancel", agent_id=agent_id, job_id=job_id, error=error)
        if fallback:
            async with self.lock:
                rec = self.store.job(job_id)
                if rec is not None and rec.state not in TERMINAL_STATES:
                    await self.emit(rec, "killed", message=f"killed; agent {agent_id} did not confirm: {error}")
        return False

    async def resume(self, text: str) -> ResumeReply:
        inv, jid = self.lookup(text)
        out: list[str] = []
        async with self.lock:
            for j in inv.jobs:
                if jid is not None and j.job_id != jid:
                    continue
                rec = self.store.job(j.job_id)
                if rec is None or rec.state not in RESUMABLE:
                    continue
                await self._redispatch(rec, clear_cancel=True)
                out.append(rec.job_id)
        log.info("resume", invocation_id=inv.invocation_id, resubmitted=out)
        return ResumeReply(invocation_id=inv.invocation_id, resubmitted=out)

    # ------------------------------------------------------------------ lost agents

    async def check_lost(self) -> list[str]:
        """Mark jobs of silent agents lost, then re-dispatch or fail them; also finish half-done ones."""
        touched: list[str] = []
        self.tracker.prune(max(600.0, 10 * self.tracker.timeout))
        async with self.lock:
            for rec in self.store.jobs_in_states(["dispatched", "deploying", "running"]):
                if not rec.agent_id or not self.tracker.is_lost(rec.agent_id, rec.job_id):
                    continue
                silent = self.tracker.silent_for(rec.agent_id, rec.job_id)
                if self.tracker.agent_silent_for(rec.agent_id) > self.tracker.timeout:
                    why = f"agent {rec.agent_id} silent for {silent:.0f}s"
                else:
                    why = f"agent {rec.agent_id} is alive but has not reported the job for {silent:.0f}s"
                log.warning("job lost", agent_id=rec.agent_id, job_id=rec.job_id, reason=why)
                await self.emit(rec, "lost", message=why, failure_kind="infrastructure")
            for rec in self.store.jobs_in_states(["lost"]):
                touched.append(rec.job_id)
                await self._after_lost(rec)
        return touched

    async def _after_lost(self, rec: JobRecord) -> None:
        spec = self.store.spec(rec.job_id)
        budget = 1 + (spec.execution.max_redispatch if spec else 0)
        if rec.attempt < budget:
            await self._redispatch(rec, clear_cancel=False)
        else:
            await self.emit(
                rec,
                "failed",
                message=f"{rec.message or 'agent lost'}; no re-dispatch left ({rec.attempt} attempt(s))",
                failure_kind="infrastructure",
            )

    async def lost_watcher(self, interval: float) -> None:
        """Task: scan for silent agents every ``interval`` seconds."""
        while True:
            try:
                await self.check_lost()
                await self.dispatch_pending(None, older_than=STALE_PENDING_S)
            except Exception:  # noqa: BLE001 - keep watching (e.g. NATS briefly unreachable)
                log.exception("lost-agent scan failed")
            await anyio.sleep(interval)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """After a (re)start: dispatch what was left pending; lost jobs are finished by the watcher."""
        done = await self.dispatch_pending(None)
        if done:
            log.info("recovered pending jobs", jobs=done)

    def active_jobs(self) -> list[JobRecord]:
        return self.store.jobs_in_states(ACTIVE_STATES)

    def snapshot(self) -> dict[str, Any]:
        return {
            "agents": [msgspec.to_builtins(a.heartbeat) for a in self.tracker.alive()],
            "last_stream_seq": self.store.last_stream_seq(),
        }
