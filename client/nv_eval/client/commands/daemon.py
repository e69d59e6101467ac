"""``nv-eval daemon start|stop|status``: the embedded default stack, or a daemon for a configured bus."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .._errors import BusUnreachableError, UsageError
from ._common import echo_json, json_option


@click.group()
def daemon() -> None:
    """Manage the nv-eval daemon."""


@daemon.command("start")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="configured bus only: where the daemon keeps its state")
def start(data_dir: Path | None) -> int:
    """Start the embedded stack (detached), or run a daemon in the foreground for a configured bus."""
    from .._settings import home_dir, resolve

    s = resolve()
    if s.url is None:
        from .. import _embedded

        url = _embedded.ensure(s.prefix)
        click.echo(f"nv-eval daemon running at {url} (prefix {s.prefix}); state in {home_dir()}")
        return 0
    ddir = data_dir or (home_dir() / "daemon")
    cmd = [sys.executable, "-m", "nv_eval.daemon", "--nats-url", s.url, "--prefix", s.prefix, "--data-dir", str(ddir)]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


@daemon.command("stop")
def stop() -> int:
    """Stop the embedded stack (nats-server, daemon, local agent)."""
    from .._settings import resolve

    s = resolve()
    if s.url is not None:
        raise UsageError(f"the daemon at {s.url} ({s.source}) is not managed by this client; stop it where it runs")
    from .. import _embedded

    stopped = _embedded.stop()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "the embedded daemon was not running")
    return 0


@daemon.command("status")
@json_option
def status(as_json: bool) -> int:
    """Show where the bus is and whether the daemon answers (exit 3 when it does not)."""
    from nv_eval.protocol import ListTasksReply, ListTasksRequest

    from .._rpc import call, connect_settings
    from .._settings import resolve

    s = resolve()
    info: dict[str, object] = {"source": s.source, "prefix": s.prefix, "url": s.url}
    if s.url is None:
        from .. import _embedded

        state = _embedded.read_state()
        info.update(url=(state or {}).get("url"), pids=(state or {}).get("pids"), running=_embedded.healthy(state))
    answering = False
    error = None
    try:
        settings = connect_settings(start=False)
        call("list_tasks", ListTasksRequest(), ListTasksReply, timeout=3.0, settings=settings)
        answering = True
    except BusUnreachableError as e:
        error = str(e)
    info["answering"] = answering
    if as_json:
        echo_json(info)
    else:
        click.echo(f"bus: {info['url'] or '-'} (prefix {s.prefix}, {s.source})")
        if "pids" in info and info["pids"]:
            click.echo("processes: " + ", ".join(f"{k}={v}" for k, v in dict(info["pids"]).items()))  # type: ignore[call-overload]
        click.echo("daemon: answering" if answering else f"daemon: not answering ({error})")
    return 0 if answering else 3
