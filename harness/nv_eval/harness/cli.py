"""``nv-eval-harness`` command: ``run`` (score one task against an endpoint) and ``ls``.

Exit codes (docs/contracts.md): 0 ok, 2 bad input, 3 endpoint unusable, 1 other failure,
143 terminated by SIGTERM. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import NoReturn

from ._errors import HarnessError
from ._runner import RunArgs, run
from ._tasks import TASKS, USER_TASK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"nv-eval-harness: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nv-eval-harness", description="Built-in nv-eval benchmark harness.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="score one task against an OpenAI-compatible endpoint")
    r.add_argument("--task", required=True)
    r.add_argument("--model-id", required=True)
    r.add_argument("--endpoint-url", required=True)
    r.add_argument("--endpoint-type", required=True, choices=["completions", "chat"])
    r.add_argument("--output-dir", required=True)
    r.add_argument("--cache-dir")
    r.add_argument("--data-dir")
    r.add_argument("--api-key-env", help="NAME of the environment variable holding the API key")
    r.add_argument("--params-json", help="TaskParams as JSON")
    r.add_argument("--task-file", help="user multiple-choice task (JSONL: question, choices, answer)")
    ls = sub.add_parser("ls", help="list the built-in tasks")
    ls.add_argument("--json", action="store_true")
    return p


def _ls(as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                [{"name": k, "description": v} for k, v in TASKS.items()]
                + [{"name": "<any> --task-file", "description": USER_TASK}]
            )
        )
    else:
        for k, v in TASKS.items():
            print(f"{k:15s} {v}")
        print(f"{'<any>':15s} {USER_TASK}")
    return 0


async def _run_cancellable(args: RunArgs) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated: list[int] = []

    def on_signal(code: int) -> None:
        terminated.append(code)
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_signal, 143)
    loop.add_signal_handler(signal.SIGINT, on_signal, 130)
    try:
        await run(args)
        return 0
    except asyncio.CancelledError:
        if terminated:
            print("nv-eval-harness: terminated by signal; finished requests are kept in the cache", file=sys.stderr)
            return terminated[0]
        raise


def main(argv: list[str] | None = None) -> None:
    ns = _parser().parse_args(argv)
    if ns.cmd == "ls":
        raise SystemExit(_ls(ns.json))
    args = RunArgs(
        task=ns.task, model_id=ns.model_id, endpoint_url=ns.endpoint_url, endpoint_type=ns.endpoint_type,
        output_dir=ns.output_dir, cache_dir=ns.cache_dir, data_dir=ns.data_dir, api_key_env=ns.api_key_env,
        params_json=ns.params_json, task_file=ns.task_file,
    )  # fmt: skip
    try:
        code = asyncio.run(_run_cancellable(args))
    except HarnessError as e:
        print(f"nv-eval-harness: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(
            f"nv-eval-harness: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr
        )
        code = 1
    sys.stdout.flush()
    raise SystemExit(code)
