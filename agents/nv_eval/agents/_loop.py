"""The base agent loop: consume jobs, own them, run them through a runtime, obey cancels.

Like Prefect's BaseWorker: one :class:`Agent` per executor pool. It connects to NATS
(reconnecting forever), pulls ``JobSpec`` messages from the durable consumer of its
executor/pool, acks a job once it is persisted in the local state, and drives
``Runtime.launch -> save_handle -> watch -> teardown`` for each job in its own cancel
scope. It serves ``<p>.control.<agent_id>`` (``CancelJob``), publishes heartbeats, and on
restart re-attaches to every non-terminal job of its state (``watch`` with the saved
handle, never a relaunch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, NotFoundError
from nv_eval.protocol import (
    DEFAULT_PREFIX,
    CancelJob,
    ControlReply,
    ControlRequest,
    JobSpec,
    ProtocolError,
    Subjects,
    decode,
    encode,
)

from ._context import AgentJobContext, EventPublisher
from ._executor import AgentEnv, Executor
from ._heartbeat import heartbeat_loop
from ._runtime import JobFailed, Outcome, Runtime
from ._state import AgentState, JobEntry

log = structlog.get_logger("nv_eval.agents.loop")

# seq numbers of attempt N start at (N-1) * ATTEMPT_SEQ_BASE, so the msg ids of a re-dispatched
# attempt (possibly on another agent) never collide with those of an earlier attempt
ATTEMPT_SEQ_BASE = 1_000_000


@dataclass
class _RunningJob:
    ctx: AgentJobContext
    runtime: Runtime | None = None
    launch_scope: anyio.CancelScope | None = None
    watch_scope: anyio.CancelScope | None = None
    stop_started: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)


class Agent:
    """One agent serving one executor pool (see the module docstring)."""

    def __init__(
        self,
        executor: Executor,
        *,
        nats_url: str,
        data_dir: str | Path,
        prefix: str = DEFAULT_PREFIX,
        pool: str = "default",
        agent_id: str | None = None,
        max_jobs: int = 4,
        heartbeat_interval: float = 2.0,
        ack_wait: float = 60.0,
        fetch_timeout: float = 2.0,
        stop_timeout: float = 10.0,
        teardown_timeout: float = 120.0,
        max_launches: int = 4,
    ) -> None:
        self.executor = executor
        self.nats_url = nats_url
        self.subjects = Subjects(prefix)
        self.pool = pool
        self.max_jobs = max_jobs
        self.heartbeat_interval = heartbeat_interval
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self.stop_timeout = stop_timeout
        self.teardown_timeout = teardown_timeout
        self.max_launches = max_launches
        self.terminal_publish_timeout = 60.0
        self.data_dir = Path(data_dir)
        self.state = AgentState(self.data_dir)
        self.agent_id = self.state.agent_id(executor.name, pool, agent_id)
        self.started_at = time.time()
        self.ready = anyio.Event()
        self.log = log.bind(agent_id=self.agent_id, executor=executor.name, pool=pool)
        self._running: dict[str, _RunningJob] = {}
        self._slot_freed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._pub: EventPublisher | None = None
        self._cancel_kv: Any = None

    # ------------------------------------------------------------------ public
    def running_jobs(self) -> list[str]:
        return sorted(self._running)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Jobs keep running when the agent stops; a restart re-attaches.

        Raises ``DataDirBusy`` when another agent runs with the same data dir."""
        self.state.lock()
        try:
            await self._run(task_status)
        finally:
            self.state.unlock()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        nc = await self._connect()
        self._nc = nc
        self._js = nc.jetstream()
        self._pub = EventPublisher(self._js, self.subjects)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.executor.bind(
                    AgentEnv(
                        agent_id=self.agent_id,
                        pool=self.pool,
                        data_dir=self.data_dir,
                        state=self.state,
                        spawn=lambda fn: tg.start_soon(fn),
                    )
                )
                sub = await nc.subscribe(self.subjects.control(self.agent_id))
                tg.start_soon(self._serve_control, sub)
                tg.start_soon(self._heartbeats)
                tg.start_soon(self._watch_cancels)
                await self._reattach_all(tg)
                tg.start_soon(self._consume)
                self.log.info("agent started", data_dir=str(self.data_dir), max_jobs=self.max_jobs)
                self.ready.set()
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(5):
                    try:
                        await self.executor.aclose()
                    except Exception as e:  # noqa: BLE001
                        self.log.warning("executor close failed", error=repr(e))
                with anyio.move_on_after(3):
                    try:  # not drain(): pending pull requests make nats-py's drain hang
                        await nc.flush(timeout=1)
                    except Exception:  # noqa: BLE001
                        pass
                    try:
                        await nc.close()
                    except Exception as e:  # noqa: BLE001 - e.g. the connection is already lost
                        self.log.info("NATS close error ignored", error=repr(e))
                self.log.info("agent stopped")

    # ------------------------------------------------------------------ NATS
    async def _connect(self) -> NATS:
        delay = 0.5
        while True:
            try:
                return await nats.connect(
                    servers=[self.nats_url],
                    name=f"nv-eval-agent {self.agent_id}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=5,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except Exception as e:  # noqa: BLE001 - any connect failure: back off and retry forever
                self.log.warning("NATS connect failed, retrying", url=self.nats_url, error=repr(e), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _on_error(self, e: Exception) -> None:
        self.log.warning("NATS error", error=repr(e))

    async def _on_disconnected(self) -> None:
        self.log.warning("NATS disconnected")

    async def _on_reconnected(self) -> None:
        self.log.info("NATS reconnected")

    async def _heartbeats(self) -> None:
        assert self._nc is not None
        await heartbeat_loop(
            self._nc,
            self.subjects,
            agent_id=self.agent_id,
            executor=self.executor.name,
            pool=self.pool,
            interval_s=self.heartbeat_interval,
            started_at=self.started_at,
            capabilities=self.executor.capabilities,
            running_jobs=self.running_jobs,
        )

    # ------------------------------------------------------------------ consuming jobs
    async def _bind_consumer(self) -> Any:
        assert self._js is not None
        js = self._js
        stream = self.subjects.jobs_stream
        durable = self.subjects.jobs_consumer(self.executor.name, self.pool)
        waited = False
        while True:
            try:
                await js.stream_info(stream)
                break
            except NotFoundError:
                if not waited:
                    self.log.info("waiting for the jobs stream (the daemon creates it)", stream=stream)
                    waited = True
            except Exception as e:  # noqa: BLE001
                self.log.warning("jobs stream lookup failed", error=repr(e))
            await anyio.sleep(1.0)
        try:
            await js.consumer_info(stream, durable)
        except NotFoundError:
            cfg = ConsumerConfig(
                durable_name=durable,
                filter_subject=self.subjects.jobs(self.executor.name, self.pool),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_ack_pending=self.max_jobs,
                max_deliver=-1,
            )
            try:
                await js.add_consumer(stream, config=cfg)
            except Exception as e:  # noqa: BLE001 - another agent or the daemon may have created it
                self.log.info("consumer create raced", error=repr(e))
        return await js.pull_subscribe_bind(durable, stream)

    async def _consume(self) -> None:
        psub = await self._bind_consumer()
        self.log.info("consuming jobs", subject=self.subjects.jobs(self.executor.name, self.pool))
        failures = 0
        while True:
            while len(self._running) >= self.max_jobs:
                self._slot_freed = anyio.Event()
                with anyio.move_on_after(5):
                    await self._slot_freed.wait()
            try:
                msgs = await psub.fetch(1, timeout=self.fetch_timeout)
                failures = 0
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as e:  # noqa: BLE001 - bus trouble: back off, rebind after repeated failures
                failures += 1
                self.log.warning("fetch failed", error=repr(e), failures=failures)
                await anyio.sleep(min(failures, 10))
                if failures % 5 == 0:
                    try:
                        await psub.unsubscribe()
                    except Exception:  # noqa: BLE001
                        pass
                    psub = await self._bind_consumer()
                continue
            for msg in msgs:
                try:
                    await self._take(msg)
                except Exception as e:  # noqa: BLE001 - one bad message never stops the agent
                    self.log.exception("failed to take a job message", error=repr(e))

    async def _take(self, msg: Msg) -> None:
        try:
            job = decode(msg.data, JobSpec)
        except ProtocolError as e:
            self.log.error("malformed job message dropped", subject=msg.subject, error=str(e))
            await msg.term()
            return
        await msg.in_progress()
        jlog = self.log.bind(job_id=job.job_id, attempt=job.attempt)
        existing = self.state.get(job.job_id)
        if existing is not None and not existing.terminal and job.attempt > existing.job.attempt:
            # the daemon re-dispatched a job we still run (it missed our heartbeats): keep running it,
            # under the new attempt number, instead of starting a second copy
            existing.job = job
            existing.seq = max(existing.seq, (job.attempt - 1) * ATTEMPT_SEQ_BASE)
            self.state.save(existing)
            rj = self._running.get(job.job_id)
            jlog.warning("re-dispatched job is still running here; adopted the new attempt")
            await self._ack(msg)
            if rj is not None:
                rj.ctx.job = job
                st = rj.ctx.last_state
                if st in ("deploying", "running"):
                    rj.ctx.last_state = None
                    await rj.ctx.status(st, message=f"attempt {job.attempt} adopted by the agent running it")  # type: ignore[arg-type]
            return
        if existing is not None and (not existing.terminal or existing.job.attempt >= job.attempt):
            jlog.info("job already owned (redelivery), acked", state=existing.state)
            await self._ack(msg)
            return
        entry = JobEntry(job=job, owned_at=time.time(), seq=max((job.attempt - 1) * ATTEMPT_SEQ_BASE, 0))
        if existing is not None:
            entry.seq = max(entry.seq, existing.seq)
        if await self._is_cancelled(job.job_id):
            self.state.put(entry)  # remember it so redeliveries are acked
            ctx = AgentJobContext(entry, self.agent_id, self.state, self._publisher())
            entry.state, entry.finished_at = "killed", time.time()
            await ctx.status("killed", message="cancelled before start")  # persists the entry
            self.state.save(entry)
            await self._ack(msg)
            jlog.info("job cancelled before start")
            return
        self.state.put(entry)  # own it: persisted before the ack
        await self._ack(msg)
        jlog.info("job owned", task=job.task.name)
        self._start_job(entry, reattach=False)

    async def _ack(self, msg: Msg) -> None:
        for _ in range(3):
            try:
                await msg.ack_sync(timeout=2.0)
                return
            except Exception as e:  # noqa: BLE001
                self.log.warning("ack failed, retrying", error=repr(e))
                await anyio.sleep(0.5)

    async def _is_cancelled(self, job_id: str) -> bool:
        assert self._js is not None
        try:
            with anyio.fail_after(5):
                if self._cancel_kv is None:
                    self._cancel_kv = await self._js.key_value(self.subjects.cancel_bucket)
                await self._cancel_kv.get(job_id)
            return True
        except (BucketNotFoundError, KeyNotFoundError, KeyDeletedError, NotFoundError):
            return False
        except Exception as e:  # noqa: BLE001 - unknown: run it; a cancel via control still works
            self.log.warning("cancel bucket lookup failed", job_id=job_id, error=repr(e))
            return False

    async def _watch_cancels(self) -> None:
        """Second path for cancels (besides ``CancelJob``): a key written to the cancel bucket for a
        job running here stops it, so a kill is not missed when the control request was."""
        assert self._js is not None
        delay = 1.0
        while True:
            try:
                with anyio.fail_after(10):
                    kv = await self._js.key_value(self.subjects.cancel_bucket)
                    watcher = await kv.watchall(ignore_deletes=True)
                delay = 1.0
                try:
                    while True:
                        try:
                            entry = await watcher.updates(timeout=5.0)
                        except (NatsTimeoutError, TimeoutError):
                            continue
                        if entry is not None and entry.key in self._running:
                            rj = self._running[entry.key]
                            if not rj.ctx.cancelled.is_set():
                                self.log.info("cancel found in the cancel bucket", job_id=entry.key)
                                self._request_stop(entry.key, "killed by user")
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        try:
                            await watcher.stop()
                        except Exception:  # noqa: BLE001
                            pass
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as e:  # noqa: BLE001 - bucket not there yet, bus trouble: retry
                self.log.debug("cancel bucket watch restarting", error=repr(e))
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _publisher(self) -> EventPublisher:
        assert self._pub is not None
        return self._pub

    # ------------------------------------------------------------------ running one job
    def _start_job(self, entry: JobEntry, *, reattach: bool) -> None:
        assert self._tg is not None
        ctx = AgentJobContext(entry, self.agent_id, self.state, self._publisher())
        if entry.state in ("deploying", "running"):
            ctx.last_state = entry.state
        rj = _RunningJob(ctx=ctx)
        self._running[entry.job.job_id] = rj
        self._tg.start_soon(self._run_job, rj, reattach)

    async def _reattach_all(self, tg: TaskGroup) -> None:
        pruned = self.state.prune()
        if pruned:
            self.log.info("forgot old ended jobs", count=pruned)
        live = self.state.live()
        by_runtime: dict[str, dict[str, dict[str, Any]]] = {}
        for entry in live:
            by_runtime.setdefault(entry.runtime, {})[entry.job.job_id] = entry.handle or {}
        for rt in self.executor.runtimes():
            try:
                with anyio.fail_after(60):
                    await rt.recover(by_runtime.get(rt.name, {}))
            except Exception as e:  # noqa: BLE001
                self.log.warning("runtime recover failed", runtime=rt.name, error=repr(e))
        for entry in self.state.ended_with_outbox():
            tg.start_soon(self._flush_outbox, entry)
        for entry in live:
            self.log.info("re-attaching", job_id=entry.job.job_id, state=entry.state)
            self._start_job(entry, reattach=True)
            if await self._is_cancelled(entry.job.job_id):
                self._request_stop(entry.job.job_id, "killed by user")

    async def _flush_outbox(self, entry: JobEntry) -> None:
        """Re-send the unacknowledged events of a job that ended before they reached the bus."""
        ctx = AgentJobContext(entry, self.agent_id, self.state, self._publisher())
        self.log.info("re-sending events", job_id=entry.job.job_id, count=len(entry.outbox))
        await ctx.flush_outbox()

    async def _run_job(self, rj: _RunningJob, reattach: bool) -> None:
        ctx = rj.ctx
        entry = ctx.entry
        job = entry.job
        try:
            outcome = await self._drive(rj, reattach)
        except JobFailed as e:
            outcome = Outcome(state="failed", message=e.message, failure_kind=e.failure_kind, exit_code=e.exit_code)
        except anyio.get_cancelled_exc_class():
            # the agent is stopping: leave the job running; a restart re-attaches
            self._running.pop(job.job_id, None)
            raise
        except Exception as e:  # noqa: BLE001 - a runtime bug fails the job, not the agent
            ctx.logger.exception("runtime error")
            outcome = Outcome(state="failed", message=f"agent error: {e!r}", failure_kind="infrastructure")
        if ctx.cancelled.is_set() and outcome.state != "succeeded":
            outcome = Outcome(state="killed", message=ctx.cancel_reason or "killed by user", exit_code=outcome.exit_code)
        with anyio.CancelScope(shield=True):
            try:
                entry.state = outcome.state
                entry.finished_at = time.time()
                with anyio.move_on_after(self.terminal_publish_timeout):
                    # persisted with the event (outbox): re-sent after a restart if not acknowledged
                    await ctx.status(outcome.state, outcome.message, outcome.failure_kind, outcome.exit_code)
                self.state.save(entry)
            finally:
                ctx.logger.info("job ended", state=outcome.state, message=outcome.message, exit_code=outcome.exit_code)
                if rj.runtime is not None:
                    with anyio.move_on_after(self.teardown_timeout) as scope:
                        try:
                            await rj.runtime.teardown(ctx, entry.handle or {})
                        except Exception as e:  # noqa: BLE001
                            ctx.logger.warning("teardown failed", error=repr(e))
                    if scope.cancelled_caught:
                        ctx.logger.warning("teardown timed out", timeout=self.teardown_timeout)
                self._running.pop(job.job_id, None)
                rj.done.set()
                self._slot_freed.set()

    async def _drive(self, rj: _RunningJob, reattach: bool) -> Outcome:
        ctx = rj.ctx
        entry = ctx.entry
        try:
            runtime = self.executor.runtime_for(entry.job)
        except Exception as e:  # noqa: BLE001 - no runtime for this job
            raise JobFailed(str(e), failure_kind="evaluation") from None
        rj.runtime = runtime
        if entry.runtime != runtime.name:
            entry.runtime = runtime.name
            self.state.save(entry)
        handle = entry.handle
        if reattach:
            if entry.outbox:
                await ctx.flush_outbox()  # events persisted before the restart go first, in order
            if handle is None or not entry.launched:
                return Outcome(
                    state="failed",
                    message="agent restarted while launching the job; its state is unknown",
                    failure_kind="infrastructure",
                )
        else:
            handle = await self._launch(rj, runtime)
            if handle is None:
                return Outcome(state="killed", message=ctx.cancel_reason or "killed while launching")
        while True:
            if ctx.cancelled.is_set() and not rj.stop_started:
                self._request_stop(entry.job.job_id, ctx.cancel_reason or "killed by user")
            with anyio.CancelScope() as rj.watch_scope:
                outcome = await runtime.watch(ctx, handle)
            if rj.watch_scope.cancelled_caught:
                return Outcome(state="killed", message="job did not stop in time; agent stopped watching it")
            if outcome.resubmit and not ctx.cancelled.is_set():
                if entry.launches >= self.max_launches:
                    return Outcome(
                        state="failed",
                        message=f"gave up after {entry.launches} launches: {outcome.message}",
                        failure_kind=outcome.failure_kind or "infrastructure",
                    )
                await ctx.log([f"relaunching: {outcome.message or 'runtime asked to resubmit'}"], "agent")
                handle = await self._launch(rj, runtime)
                if handle is None:
                    return Outcome(state="killed", message=ctx.cancel_reason or "killed while launching")
                continue
            return outcome

    async def _launch(self, rj: _RunningJob, runtime: Runtime) -> dict[str, Any] | None:
        ctx = rj.ctx
        entry = ctx.entry
        entry.launches += 1
        entry.state = "launching"
        entry.launched = False
        entry.handle = None
        self.state.save(entry)
        handle: dict[str, Any] | None = None
        with anyio.CancelScope() as rj.launch_scope:
            if ctx.cancelled.is_set():
                rj.launch_scope.cancel()
            handle = await runtime.launch(ctx)
        rj.launch_scope = None
        if handle is None:  # cancelled while launching: stop whatever it had started and saved
            if entry.handle is not None:
                with anyio.move_on_after(self.stop_timeout):
                    try:
                        await runtime.stop(ctx, entry.handle)
                    except Exception as e:  # noqa: BLE001
                        ctx.logger.warning("runtime stop failed", error=repr(e))
            return None
        entry.launched = True
        await ctx.save_handle(handle)
        return handle

    # ------------------------------------------------------------------ cancel / control
    def _request_stop(self, job_id: str, reason: str) -> bool:
        rj = self._running.get(job_id)
        if rj is None:
            return False
        rj.ctx.cancel_reason = rj.ctx.cancel_reason or reason
        rj.ctx.cancelled.set()
        if rj.launch_scope is not None:
            rj.launch_scope.cancel()
        if not rj.stop_started and rj.ctx.entry.handle is not None and rj.runtime is not None:
            rj.stop_started = True
            assert self._tg is not None
            self._tg.start_soon(self._stop_job, rj)
        return True

    async def _stop_job(self, rj: _RunningJob) -> None:
        assert rj.runtime is not None
        ctx = rj.ctx
        ctx.logger.info("stopping job", reason=ctx.cancel_reason)
        with anyio.move_on_after(self.stop_timeout):
            try:
                await rj.runtime.stop(ctx, ctx.entry.handle or {})
            except Exception as e:  # noqa: BLE001
                ctx.logger.warning("runtime stop failed", error=repr(e))
        # backstop: if watch does not return soon after stop, stop watching
        with anyio.move_on_after(self.stop_timeout):
            await rj.done.wait()
            return
        if rj.watch_scope is not None:
            rj.watch_scope.cancel()

    async def _serve_control(self, sub: Any) -> None:
        async for msg in sub.messages:
            try:
                reply = self._handle_control(msg.data)
            except Exception as e:  # noqa: BLE001
                self.log.exception("control handler failed")
                reply = ControlReply(ok=False, error=f"agent error: {e!r}")
            if msg.reply:
                try:
                    await msg.respond(encode(reply))
                except Exception as e:  # noqa: BLE001
                    self.log.warning("control reply failed", error=repr(e))

    def _handle_control(self, data: bytes) -> ControlReply:
        try:
            req = decode(data, ControlRequest)
        except ProtocolError as e:
            self.log.error("malformed control message", error=str(e))
            return ControlReply(ok=False, error=str(e))
        if isinstance(req, CancelJob):
            if self._request_stop(req.job_id, req.reason):
                self.log.info("cancel requested", job_id=req.job_id, reason=req.reason)
                return ControlReply(ok=True)
            entry = self.state.get(req.job_id)
            if entry is not None and entry.terminal:
                return ControlReply(ok=True, error=f"job already ended ({entry.state})")
            return ControlReply(ok=False, error=f"job {req.job_id} is not running on agent {self.agent_id}")
        return ControlReply(ok=False, error=f"unsupported control request {type(req).__name__}")
