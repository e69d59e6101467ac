"""``serve()``: connect, ensure JetStream resources, catch up on events, then serve until cancelled."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import nats
from anyio.abc import TaskStatus
from nv_eval.protocol import Subjects
from nv_eval.protocol.logsetup import get_logger

from ._agents import AgentTracker
from ._api import Api, start_service
from ._bus import ensure_resources
from ._consumers import EventFold, heartbeats
from ._engine import Engine
from ._settings import Settings
from ._store import Store

log = get_logger("nv_eval.daemon")


@dataclass(frozen=True)
class Ready:
    """Handed to ``task_status.started()`` once the daemon answers requests."""

    engine: Engine
    startup_s: float
    replayed: int


async def serve(settings: Settings, *, task_status: TaskStatus[Ready] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the daemon until cancelled. Use with ``await tg.start(serve, settings)`` in tests."""
    t0 = time.monotonic()
    subjects = Subjects(settings.prefix)
    store = Store(settings.db_path)
    try:
        with anyio.fail_after(settings.connect_timeout):
            nc = await nats.connect(
                settings.nats_url,
                name=f"nv-eval-daemon[{settings.prefix}]",
                connect_timeout=min(2.0, settings.connect_timeout),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_on_error,
                disconnected_cb=_on_disconnect,
                reconnected_cb=_on_reconnect,
            )
    except TimeoutError:
        store.close()
        raise ConnectionError(
            f"cannot reach NATS at {settings.nats_url} within {settings.connect_timeout:.0f}s"
        ) from None
    try:
        await _refuse_if_served(nc, subjects)
        js = nc.jetstream(timeout=10)
        kv = await ensure_resources(js, subjects)
        tracker = AgentTracker(timeout=settings.heartbeat_timeout)
        engine = Engine(nc, js, kv, store, subjects, tracker)
        async with anyio.create_task_group() as tg:
            fold = EventFold(engine, tg)
            await fold.open()
            replayed = await fold.catch_up()
            await tg.start(heartbeats, engine)
            await engine.recover()
            svc = await start_service(Api(engine), queue_group=f"{settings.prefix}-daemon")
            tg.start_soon(fold.run)
            tg.start_soon(engine.dispatcher)
            tg.start_soon(engine.lost_watcher, settings.scan_interval)
            if settings.http_port:
                from ._http import serve_http

                await tg.start(serve_http, engine, settings.http_host, settings.http_port)
            startup = time.monotonic() - t0
            log.info(
                "daemon ready",
                prefix=settings.prefix,
                nats_url=settings.nats_url,
                db=str(settings.db_path),
                replayed=replayed,
                startup_ms=round(startup * 1000, 1),
            )
            task_status.started(Ready(engine, startup, replayed))
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.move_on_after(3, shield=True):
                    await svc.stop()
    finally:
        with anyio.move_on_after(3, shield=True):
            await _close(nc)
        store.close()
        log.info("daemon stopped", prefix=settings.prefix)


class AlreadyServed(OSError):
    """Another daemon already answers on this prefix (two would dispatch every job twice)."""


async def _refuse_if_served(nc: Any, subjects: Subjects) -> None:
    import nats.errors

    try:
        await nc.request(subjects.api("list_tasks"), b"{}", timeout=0.5)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return
    raise AlreadyServed(f"another daemon already serves prefix {subjects.prefix!r} on this bus")


async def _on_error(e: Exception) -> None:
    log.warning("nats error", error=f"{type(e).__name__}: {e}")


async def _on_disconnect() -> None:
    log.warning("nats disconnected")


async def _on_reconnect() -> None:
    log.info("nats reconnected")


async def _close(nc: Any) -> None:
    try:
        await nc.flush(timeout=1)
    except Exception:  # noqa: BLE001 - closing anyway
        pass
    await nc.close()
