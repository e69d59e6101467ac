"""``nv-eval status <id>``: an invocation's (or one job's) state, progress and metrics.

The fast path: plain JSON over the socket-level NATS client, no protocol/msgspec import.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ._common import check_id, echo_json, fmt_duration, json_option, table

TERMINAL = ("succeeded", "failed", "killed")  # nv_eval.protocol.TERMINAL_STATES


def render_status(inv: Any, job_id: str | None = None) -> str:
    """Plain-text view of an invocation record (a dict, or an InvocationRecord); only ``job_id`` if given."""
    if not isinstance(inv, dict):
        import msgspec

        inv = msgspec.to_builtins(inv)
    jobs = [j for j in inv.get("jobs", []) if job_id is None or j["job_id"] == job_id]
    head = (f"invocation {inv['invocation_id']}  state={inv['state']}  executor={inv['executor']}  "
            f"model={inv['model_id']}\noutput: {inv['output_dir']}")
    rows = []
    now = time.time()
    for j in jobs:
        p = j.get("progress")
        prog = f"{p['done']}/{p['total']}" if p else "-"
        started, finished = j.get("started_at"), j.get("finished_at")
        end = finished or (now if started else None)
        dur = fmt_duration(end - started) if (started and end) else "-"
        metrics = ", ".join(
            f"{k}={m['value']:.4g}" + (f"±{m['stderr']:.2g}" if m.get("stderr") is not None else "")
            for k, m in (j.get("metrics") or {}).items()
        )
        note = j.get("message") or ""
        if j.get("failure_kind"):
            note = f"[{j['failure_kind']}] {note}".strip()
        note = " ".join(note.split())
        rows.append((j["job_id"], j["task"], j["state"], prog, dur, metrics or "-",
                     note if len(note) <= 90 else note[:87] + "..."))
    return head + "\n" + table(("JOB", "TASK", "STATE", "PROGRESS", "TIME", "METRICS", "MESSAGE"), rows)


def _done(reply: dict[str, Any]) -> bool:
    jid = reply.get("job_id")
    jobs = [j for j in reply["invocation"].get("jobs", []) if jid is None or j["job_id"] == jid]
    return all(j["state"] in TERMINAL for j in jobs)


@click.command()
@click.argument("id_", metavar="ID")
@json_option
@click.option("--watch", "-w", is_flag=True, help="refresh until the invocation ends")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True, help="--watch refresh period (s)")
def status(id_: str, as_json: bool, watch: bool, interval: float) -> int:
    """Show the state of an invocation or job (id, job id <invocation>.<n>, or a unique prefix)."""
    from .._rpc import call_json, connect_settings

    ident = check_id(id_)
    settings = connect_settings()

    def fetch() -> dict[str, Any]:
        return call_json("status", {"id": ident}, "status", settings=settings)

    reply = fetch()
    if not watch:
        if as_json:
            echo_json(reply)
        else:
            click.echo(render_status(reply["invocation"], reply.get("job_id")))
        return 0
    if as_json:
        while True:
            echo_json(reply)
            if _done(reply):
                return 0
            time.sleep(interval)
            reply = fetch()
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    with Live(Text(render_status(reply["invocation"], reply.get("job_id"))), console=Console(), auto_refresh=False) as live:
        while not _done(reply):
            time.sleep(interval)
            reply = fetch()
            live.update(Text(render_status(reply["invocation"], reply.get("job_id"))), refresh=True)
    return 0
