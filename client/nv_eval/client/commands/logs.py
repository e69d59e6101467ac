"""``nv-eval logs <id> [-f]``: replay a job's (or an invocation's) log lines from the event stream."""

from __future__ import annotations

import click

from ._common import check_id


@click.command()
@click.argument("id_", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job(s) end")
@click.option("--json", "as_json", is_flag=True, help="one JSON log event per line")
def logs(id_: str, follow: bool, as_json: bool) -> int:
    """Print the logs of a job (or of every job of an invocation)."""
    from nv_eval.protocol import StatusReply, StatusRequest

    from .._follow import print_logs
    from .._rpc import call

    reply = call("status", StatusRequest(id=check_id(id_)), StatusReply)
    inv = reply.invocation
    return print_logs(inv.invocation_id, reply.job_id, follow, several=reply.job_id is None and len(inv.jobs) > 1,
                      as_json=as_json)
