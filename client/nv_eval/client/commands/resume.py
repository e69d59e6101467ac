"""``nv-eval resume <id>``: re-submit the jobs of an invocation that did not succeed."""

from __future__ import annotations

import click

from ._common import check_id, echo_json, json_option


@click.command()
@click.argument("id_", metavar="ID")
@json_option
def resume(id_: str, as_json: bool) -> int:
    """Resume an invocation: re-run its failed, killed or lost jobs (finished requests are cached)."""
    from nv_eval.protocol import ResumeReply, ResumeRequest

    from .._rpc import call

    reply = call("resume", ResumeRequest(id=check_id(id_)), ResumeReply)
    if as_json:
        echo_json(reply)
    elif reply.resubmitted:
        click.echo(f"resubmitted {len(reply.resubmitted)} job(s) of {reply.invocation_id}: {', '.join(reply.resubmitted)}")
    else:
        click.echo(f"nothing to resume: every job of {reply.invocation_id} succeeded or is still running")
    return 0
