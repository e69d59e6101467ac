"""``nv-eval export <id> --dest local --format json|csv``: metrics (with stderr) of an invocation to a file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._errors import UsageError
from ._common import check_id

ENTRY_POINT_GROUP = "nv_eval.exporters"


@click.command()
@click.argument("id_", metavar="ID")
@click.option("--dest", default="local", show_default=True, help="destination: local (other exporters are plugins)")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--output", "-O", type=click.Path(dir_okay=False, path_type=Path),
              help="file to write (default <output_dir>/<id>/export/results.<format>; - for stdout)")
def export(id_: str, dest: str, fmt: str, output: Path | None) -> int:
    """Export the results of an invocation."""
    from nv_eval.protocol import StatusReply, StatusRequest

    from .._rpc import call

    ident = check_id(id_)
    if dest != "local":
        return _plugin(dest, ident, fmt, output)
    reply = call("status", StatusRequest(id=ident), StatusReply)
    from ..exporters import export_invocation

    where, warnings = export_invocation(reply.invocation, fmt, output)
    for w in warnings:
        click.echo(f"nv-eval: warning: {w}", err=True)
    if output is not None and str(output) == "-":
        sys.stdout.write(where)
    else:
        click.echo(where)
    return 0


def _plugin(dest: str, ident: str, fmt: str, output: Path | None) -> int:
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if dest not in eps:
        known = ", ".join(["local", *sorted(eps)])
        raise UsageError(f"--dest: got {dest!r}; available destinations: {known}")
    exporter = eps[dest].load()
    rv = exporter(ident, fmt=fmt, output=output)
    return int(rv or 0)
