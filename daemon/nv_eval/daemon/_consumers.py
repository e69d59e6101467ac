"""Bus consumers of the daemon: the event fold (durable JetStream consumer) and heartbeats."""

from __future__ import annotations

import time
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from anyio.abc import TaskGroup
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nv_eval.protocol import (
    TERMINAL_STATES,
    Event,
    Heartbeat,
    ProtocolError,
    StatusEvent,
    decode,
)
from nv_eval.protocol.logsetup import get_logger

from ._engine import Engine

log = get_logger("nv_eval.daemon.consumers")

FOLD_DURABLE = "daemon_fold"
FETCH_BATCH = 256


class EventFold:
    """Pulls every event from the durable consumer, folds it into the store, acks after commit."""

    def __init__(self, engine: Engine, tg: TaskGroup) -> None:
        self.engine = engine
        self.tg = tg
        self.psub: Any = None
        self.folded = 0

    async def open(self) -> None:
        """(Re)create the durable consumer positioned right after the last event the store committed.

        The store, not the consumer's ack floor, is the truth about what was folded: after a crash the
        unacked tail of a batch would otherwise only come back after ``ack_wait``, behind newer events.
        """
        subj = self.engine.subjects
        js = self.engine.js
        store = self.engine.store
        info = await js.stream_info(subj.events_stream)
        identity = str(info.created or "")
        known = store.get_meta("events_stream_created")
        if known is not None and known != identity:
            # the events stream was deleted and created again: its sequence numbers start over
            log.warning("events stream was recreated; folding it from the start", was=known, now=identity)
            store.set_last_stream_seq(0)
        store.set_meta("events_stream_created", identity)
        last = store.last_stream_seq()
        try:
            await js.delete_consumer(subj.events_stream, FOLD_DURABLE)
        except nats.js.errors.NotFoundError:
            pass
        cfg = ConsumerConfig(
            durable_name=FOLD_DURABLE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if last else DeliverPolicy.ALL,
            opt_start_seq=last + 1 if last else None,
            ack_policy=AckPolicy.ALL,
            ack_wait=30,
            max_ack_pending=20_000,
            filter_subject=subj.events_all(),
        )
        await js.add_consumer(subj.events_stream, cfg)
        self.psub = await js.pull_subscribe_bind(durable=FOLD_DURABLE, stream=subj.events_stream)

    async def pull_once(self, timeout: float) -> int:
        """Fetch and fold one batch; 0 when nothing arrived within ``timeout``."""
        try:
            msgs = await self.psub.fetch(FETCH_BATCH, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return 0
        if not msgs:
            return 0
        with self.engine.store.batch():  # one commit per batch; no await inside
            for msg in msgs:
                try:
                    self._handle(msg)
                except Exception:  # noqa: BLE001 - one bad event must not stall or roll back the rest
                    log.exception("event not folded", subject=getattr(msg, "subject", "?"))
        try:
            await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch, after the commit
        except Exception as e:  # noqa: BLE001 - a lost ack means a redelivery, which the fold skips
            log.warning("ack failed", error=str(e))
        return len(msgs)

    async def catch_up(self, limit_s: float = 120.0) -> int:
        """Fold everything already in the stream (bounded), before the daemon acts on its state."""
        info = await self.engine.js.stream_info(self.engine.subjects.events_stream)
        target = info.state.last_seq
        n = 0
        with anyio.move_on_after(limit_s) as scope:
            while self.engine.store.last_stream_seq() < target:
                got = await self.pull_once(timeout=1.0)
                n += got
                if got == 0 and (await self.psub.consumer_info()).num_pending == 0:
                    break  # the tail of the stream was removed by its limits
        if scope.cancelled_caught:
            log.warning("catch-up did not finish in time; continuing live", folded=n, target=target)
        return n

    async def run(self) -> None:
        while True:
            try:
                await self.pull_once(timeout=1.0)
            except Exception:  # noqa: BLE001 - connection hiccup; keep going
                log.exception("event fetch failed")
                await anyio.sleep(0.5)

    def _handle(self, msg: Any) -> None:
        try:
            ev: Event = decode(msg.data, Event)
        except ProtocolError as e:
            log.warning("malformed event dropped", subject=msg.subject, error=str(e))
            return
        if not ev.msg_id:
            ev.msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        try:
            seq = msg.metadata.sequence.stream
        except Exception:  # noqa: BLE001
            seq = None
        res = self.engine.store.apply(ev, stream_seq=seq, now=time.time())
        self.folded += 1
        if ev.source != "daemon":
            self.engine.tracker.saw_job(ev.source, ev.job_id)
        if not res.applied and res.reason not in ("", "log events are not stored"):
            log.debug("event not applied", msg_id=ev.msg_id, reason=res.reason)
        # an agent started a job the daemon had already killed (it raced the cancel key): cancel it there
        job = res.job
        if (
            isinstance(ev, StatusEvent)
            and not res.applied
            and job is not None
            and job.state == "killed"
            and ev.source != "daemon"
            and ev.attempt == job.attempt
            and ev.state not in TERMINAL_STATES
        ):
            self.tg.start_soon(self.engine.cancel_on_agent, ev.source, ev.job_id, False)


async def heartbeats(engine: Engine, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Task: track agent heartbeats (malformed ones are logged and dropped)."""
    sub = await engine.nc.subscribe(engine.subjects.heartbeats_all())
    task_status.started()
    try:
        async for msg in sub.messages:
            try:
                hb = decode(msg.data, Heartbeat)
            except ProtocolError as e:
                log.warning("malformed heartbeat dropped", subject=msg.subject, error=str(e))
                continue
            if engine.tracker.beat(hb):
                log.info("agent seen", agent_id=hb.agent_id, executor=hb.executor, pool=hb.pool)
    finally:
        with anyio.move_on_after(2, shield=True):
            await sub.unsubscribe()
