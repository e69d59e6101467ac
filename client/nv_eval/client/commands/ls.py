"""``nv-eval ls tasks`` (the local task registry) and ``nv-eval ls runs`` (invocations known to the daemon)."""

from __future__ import annotations

from pathlib import Path

import click

from .._errors import ConfigCompositionError
from ._common import echo_json, fmt_time, json_option, parse_since, table


@click.group()
def ls() -> None:
    """List tasks or runs."""


@ls.command("tasks")
@json_option
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path), help="also read DIR/tasks.toml")
def tasks(as_json: bool, config_dir: Path | None) -> None:
    """List the benchmarks in the task registry (no daemon needed)."""
    from nv_eval.protocol import RegistryError, load_registry

    if config_dir is not None and not config_dir.is_dir():
        raise ConfigCompositionError(f"--config-dir: {str(config_dir)!r} is not a directory")
    try:
        reg = load_registry([config_dir / "tasks.toml"] if config_dir else [])
    except RegistryError as e:
        raise ConfigCompositionError(str(e)) from None
    entries = [reg[k] for k in sorted(reg)]
    if as_json:
        echo_json(entries)
        return
    rows = [
        (e.name, ",".join(e.endpoint_types), ",".join(e.capabilities) or "-", e.harness, e.description)
        for e in entries
    ]
    click.echo(table(("TASK", "ENDPOINT TYPES", "NEEDS", "HARNESS", "DESCRIPTION"), rows))


@ls.command("runs")
@json_option
@click.option("--since", help="only runs created within this period (1d, 12h, 30m) or after an ISO date")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
def runs(as_json: bool, since: str | None, limit: int) -> None:
    """List invocations known to the daemon, newest first."""
    from nv_eval.protocol import ListRunsReply, ListRunsRequest

    from .._rpc import call

    since_ts = parse_since(since)
    reply = call("list_runs", ListRunsRequest(since=since_ts, limit=limit), ListRunsReply)
    invs = sorted(reply.invocations, key=lambda i: i.created_at, reverse=True)
    if as_json:
        echo_json(invs)
        return
    rows = []
    for inv in invs:
        done = sum(1 for j in inv.jobs if j.state == "succeeded")
        rows.append((inv.invocation_id, inv.state, inv.executor, inv.model_id, f"{done}/{len(inv.jobs)}", fmt_time(inv.created_at)))
    if not rows:
        click.echo("no runs")
        return
    click.echo(table(("INVOCATION", "STATE", "EXECUTOR", "MODEL", "SUCCEEDED", "CREATED"), rows))
