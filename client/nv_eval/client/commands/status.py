"""``nv-eval status <id>``: an invocation's (or one job's) state, progress and metrics."""

from __future__ import annotations

import time

import click

from ._common import check_id, echo_json, fmt_duration, json_option, table


def render_status(inv: object, job_id: str | None = None) -> str:
    """Plain-text view of an InvocationRecord (only the named job when ``job_id``)."""
    from nv_eval.protocol import InvocationRecord

    assert isinstance(inv, InvocationRecord)
    jobs = [j for j in inv.jobs if job_id is None or j.job_id == job_id]
    head = (f"invocation {inv.invocation_id}  state={inv.state}  executor={inv.executor}  model={inv.model_id}\n"
            f"output: {inv.output_dir}")
    rows = []
    now = time.time()
    for j in jobs:
        prog = f"{j.progress.done}/{j.progress.total}" if j.progress else "-"
        end = j.finished_at or (now if j.started_at else None)
        dur = fmt_duration(end - j.started_at) if (j.started_at and end) else "-"
        metrics = ", ".join(
            f"{k}={m.value:.4g}" + (f"±{m.stderr:.2g}" if m.stderr is not None else "") for k, m in j.metrics.items()
        )
        note = j.message or ""
        if j.failure_kind:
            note = f"[{j.failure_kind}] {note}".strip()
        note = " ".join(note.split())
        rows.append((j.job_id, j.task, j.state, prog, dur, metrics or "-", note if len(note) <= 90 else note[:87] + "..."))
    return head + "\n" + table(("JOB", "TASK", "STATE", "PROGRESS", "TIME", "METRICS", "MESSAGE"), rows)


@click.command()
@click.argument("id_", metavar="ID")
@json_option
@click.option("--watch", "-w", is_flag=True, help="refresh until the invocation ends")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True, help="--watch refresh period (s)")
def status(id_: str, as_json: bool, watch: bool, interval: float) -> int:
    """Show the state of an invocation or job (id, job id <invocation>.<n>, or a unique prefix)."""
    from nv_eval.protocol import StatusReply, StatusRequest

    from .._rpc import call, connect_settings

    ident = check_id(id_)
    settings = connect_settings()
    reply = call("status", StatusRequest(id=ident), StatusReply, settings=settings)
    if not watch:
        if as_json:
            echo_json(reply)
        else:
            click.echo(render_status(reply.invocation, reply.job_id))
        return 0
    return _watch(reply, ident, as_json, interval, settings)


def _watch(reply: object, ident: str, as_json: bool, interval: float, settings: object) -> int:
    from nv_eval.protocol import TERMINAL_STATES, StatusReply, StatusRequest

    from .._rpc import call

    assert isinstance(reply, StatusReply)

    def done(r: StatusReply) -> bool:
        jobs = [j for j in r.invocation.jobs if r.job_id is None or j.job_id == r.job_id]
        return all(j.state in TERMINAL_STATES for j in jobs)

    if as_json:
        while True:
            echo_json(reply)
            if done(reply):
                return 0
            time.sleep(interval)
            reply = call("status", StatusRequest(id=ident), StatusReply, settings=settings)  # type: ignore[arg-type]
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    with Live(Text(render_status(reply.invocation, reply.job_id)), console=Console(), auto_refresh=False) as live:
        while not done(reply):
            time.sleep(interval)
            reply = call("status", StatusRequest(id=ident), StatusReply, settings=settings)  # type: ignore[arg-type]
            live.update(Text(render_status(reply.invocation, reply.job_id)), refresh=True)
    return 0
