"""Periodic agent heartbeats: capabilities and the ids of the jobs the agent is running."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import anyio
import structlog
from nats.aio.client import Client as NATS
from nv_eval.protocol import Heartbeat, Subjects, encode

log = structlog.get_logger("nv_eval.agents.heartbeat")


def agent_version() -> str:
    """The installed version of the agents (``nv-eval-agents`` alone, or the ``nv-eval`` workspace)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("nv-eval-agents", "nv-eval"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "0"


async def heartbeat_loop(
    nc: NATS,
    subjects: Subjects,
    *,
    agent_id: str,
    executor: str,
    pool: str,
    interval_s: float,
    started_at: float,
    capabilities: Callable[[], list[str]],
    running_jobs: Callable[[], list[str]],
    version: str | None = None,
) -> None:
    """Publish a :class:`Heartbeat` every ``interval_s`` until cancelled; never raises on bus errors."""
    hostname = socket.gethostname()
    version = version or agent_version()
    subject = subjects.heartbeat(agent_id)
    while True:
        hb = Heartbeat(
            agent_id=agent_id,
            executor=executor,
            pool=pool,
            hostname=hostname,
            capabilities=capabilities(),
            running_jobs=running_jobs(),
            started_at=started_at,
            ts=time.time(),
            interval_s=interval_s,
            version=version,
        )
        try:
            await nc.publish(subject, encode(hb))
        except Exception as e:  # noqa: BLE001 - a heartbeat must never kill the agent
            log.warning("heartbeat publish failed", error=repr(e))
        await anyio.sleep(interval_s)
