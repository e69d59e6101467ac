"""``python -m nv_eval.agents``: run one agent for an executor pool until SIGTERM/SIGINT.

Stopping the agent leaves its jobs running; starting it again with the same ``--data-dir``
re-attaches to them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import anyio
from nv_eval.protocol import DEFAULT_PREFIX
from nv_eval.protocol.logsetup import configure_logging

from ._executor import ExecutorNotFound, load_executor
from ._loop import Agent
from ._state import DataDirBusy


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nv_eval.agents", description="Run an nv-eval agent.")
    p.add_argument("--executor", default="local", help="executor name (entry point in nv_eval.executors)")
    p.add_argument("--pool", default="default")
    p.add_argument("--nats-url", default=os.environ.get("NV_EVAL_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("NV_EVAL_PREFIX", DEFAULT_PREFIX))
    p.add_argument("--data-dir", required=True, help="where the agent keeps its state (owned jobs, handles)")
    p.add_argument("--agent-id", default=None, help="default: persisted in --data-dir, generated once")
    p.add_argument("--max-jobs", type=int, default=4)
    p.add_argument("--heartbeat-interval", type=float, default=2.0)
    p.add_argument("--log-level", default=os.environ.get("NV_EVAL_LOG_LEVEL", "info"))
    return p


async def _main(agent: Agent) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.max_jobs < 1:
        print("error: --max-jobs must be >= 1", file=sys.stderr)
        return 2
    if args.heartbeat_interval <= 0:
        print("error: --heartbeat-interval must be > 0", file=sys.stderr)
        return 2
    try:
        executor = load_executor(args.executor)
    except ExecutorNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    agent = Agent(
        executor,
        nats_url=args.nats_url,
        prefix=args.prefix,
        data_dir=Path(args.data_dir),
        pool=args.pool,
        agent_id=args.agent_id,
        max_jobs=args.max_jobs,
        heartbeat_interval=args.heartbeat_interval,
    )
    try:
        agent.state.lock()  # before starting anything: one agent per data dir
    except DataDirBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    anyio.run(_main, agent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
