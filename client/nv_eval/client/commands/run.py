"""``nv-eval run``: compose the config, validate it, and submit it to the daemon (or ``--dry-run``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--config-dir", type=click.Path(path_type=Path), help="directory of the config (default: current dir)")
@click.option("--config-name", required=True, help="config file name, with or without .yaml")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Hydra override: key=v, +key=v (add), ++key=v (add or set), ~key (delete); repeatable")
@click.option("--dry-run", is_flag=True, help="print the resolved config and what would be launched; start nothing")
@click.option("--follow", "-f", is_flag=True, help="show live progress until the invocation ends")
def run(config_dir: Path | None, config_name: str, overrides: tuple[str, ...], dry_run: bool, follow: bool) -> int:
    """Run the evaluations of a config; prints the invocation id."""
    from .._compose import compose_run

    composed = compose_run(config_name, config_dir, list(overrides))
    if dry_run:
        from .._dryrun import render

        sys.stdout.write(render(composed))
        return 0
    from nv_eval.protocol import RunReply, RunRequest, executor_name

    from .._rpc import call, connect_settings

    settings = connect_settings()
    executor = executor_name(composed.config.execution)
    if settings.source == "embedded" and executor != "local":
        click.echo(f"nv-eval: note: the embedded stack runs a local agent only; the jobs wait for a {executor!r} agent "
                   f"(start one with: nv-eval agent start --executor {executor})", err=True)
    req = RunRequest(config=composed.config, tasks=composed.tasks, raw_config=composed.doc)
    reply = call("run", req, RunReply, settings=settings)
    inv = reply.invocation
    _save_config(composed, inv.invocation_id)
    click.echo(inv.invocation_id)
    sys.stdout.flush()
    if not follow:
        click.echo(f"{len(inv.jobs)} job(s) submitted; follow with: nv-eval status {inv.invocation_id} --watch", err=True)
        return 0
    from .._follow import follow_invocation

    return follow_invocation(inv.invocation_id)


def _save_config(composed: object, invocation_id: str) -> None:
    """Non-local executors: the client writes the resolved config next to the results (best effort)."""
    import os

    from nv_eval.protocol import LocalExecution, SlurmExecution

    cfg = composed.config  # type: ignore[attr-defined]
    ex = cfg.execution
    if isinstance(ex, LocalExecution) or (isinstance(ex, SlurmExecution) and ex.hostname):
        return
    import yaml

    path = os.path.join(ex.output_dir, invocation_id, "config.yaml")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(composed.doc, f, sort_keys=False)  # type: ignore[attr-defined]
    except OSError as e:
        click.echo(f"nv-eval: warning: cannot save {path}: {e.strerror}", err=True)
