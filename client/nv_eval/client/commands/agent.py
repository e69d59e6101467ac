"""``nv-eval agent start --executor NAME``: run an agent in the foreground on the configured (or embedded) bus."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.group()
def agent() -> None:
    """Run agents (one per environment)."""


@agent.command("start")
@click.option("--executor", required=True, help="executor plugin name (local, slurm, lepton, or a custom one)")
@click.option("--pool", default=None, help="executor pool (default: default)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="agent state directory")
def start(executor: str, pool: str | None, data_dir: Path | None) -> int:
    """Run an agent in the foreground (Ctrl-C stops it; it re-attaches to its jobs on restart)."""
    import re

    from .._errors import UsageError
    from .._rpc import connect_settings
    from .._settings import home_dir, resolve

    if not re.fullmatch(r"[a-z][a-z0-9_]*", executor):
        raise UsageError(f"--executor: got {executor!r}; expected an executor name (lowercase letters, digits, _)")
    if pool is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", pool):
        raise UsageError(f"--pool: got {pool!r}; expected letters, digits, _ or -")
    s = resolve()
    if s.url is None:
        from .. import _embedded

        s = connect_settings(start=False) if _embedded.healthy(_embedded.read_state()) else s
        if s.url is None:
            url = _embedded.ensure(s.prefix, with_agent=False)
            s = type(s)(url, s.prefix, "embedded")
    ddir = data_dir or (home_dir() / f"agent-{executor}-{pool or 'default'}-fg")
    cmd = [sys.executable, "-m", "nv_eval.agents", "--executor", executor, "--nats-url", str(s.url),
           "--prefix", s.prefix, "--data-dir", str(ddir)]
    if pool:
        cmd += ["--pool", pool]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover
