"""Command line: ``python -m nv_eval.daemon --nats-url URL --data-dir DIR [options]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import anyio
from nv_eval.protocol import DEFAULT_PREFIX
from nv_eval.protocol.logsetup import configure_logging, get_logger

from ._service import serve
from ._settings import Settings


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m nv_eval.daemon", description="nv-eval daemon (central service)")
    p.add_argument("--nats-url", default=os.environ.get("NV_EVAL_NATS_URL"), help="NATS URL (env NV_EVAL_NATS_URL)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="bus subject prefix (default: nveval)")
    p.add_argument("--data-dir", required=True, type=Path, help="where the SQLite state lives")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, help="seconds before a silent agent is lost")
    p.add_argument("--http-port", type=int, default=0, help="HTTP API port on 127.0.0.1 (0: off)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="give up reaching NATS after this (s)")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    if not a.nats_url:
        p.error("--nats-url is required (or set NV_EVAL_NATS_URL)")
    if a.heartbeat_timeout <= 0:
        p.error("--heartbeat-timeout: expected a number > 0")
    if a.connect_timeout <= 0:
        p.error("--connect-timeout: expected a number > 0")
    if not (0 <= a.http_port <= 65535):
        p.error("--http-port: expected 0..65535")
    configure_logging(a.log_level)
    return Settings(
        nats_url=a.nats_url,
        prefix=a.prefix,
        data_dir=a.data_dir,
        heartbeat_timeout=a.heartbeat_timeout,
        http_port=a.http_port,
        connect_timeout=a.connect_timeout,
    )


async def _main(settings: Settings) -> None:
    async with anyio.create_task_group() as tg:

        async def _signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for s in sigs:
                    get_logger("nv_eval.daemon").info("signal received, stopping", signal=s.name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(_signals)
        await serve(settings)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        anyio.run(_main, settings)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - one line for what we expect, traceback for the rest
        expected = _expected(e)
        if expected is None:
            raise
        print(f"nv-eval daemon: {expected}", file=sys.stderr)
        return 1
    return 0


def _expected(e: BaseException) -> BaseException | None:
    """The OSError (NATS unreachable, data dir unwritable, port in use) inside ``e``, if any."""
    if isinstance(e, OSError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            found = _expected(sub)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
