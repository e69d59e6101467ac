"""``nv-eval kill <id>``: stop an invocation (every unfinished job) or one job."""

from __future__ import annotations

import click

from ._common import check_id, echo_json, json_option


@click.command()
@click.argument("id_", metavar="ID")
@json_option
def kill(id_: str, as_json: bool) -> int:
    """Kill an invocation or one job (id or unique prefix)."""
    from nv_eval.protocol import KillReply, KillRequest

    from .._rpc import call

    reply = call("kill", KillRequest(id=check_id(id_)), KillReply)
    if as_json:
        echo_json(reply)
    elif reply.killed:
        click.echo(f"killed {len(reply.killed)} job(s) of {reply.invocation_id}: {', '.join(reply.killed)}")
    else:
        click.echo(f"nothing to kill: every job of {reply.invocation_id} had already ended")
    return 0
