"""The ``slurm`` executor: jobs run as Slurm jobs, submitted on the login node or over SSH.

``execution.hostname`` selects remote mode (asyncssh to the login node, see ``_conn``);
without it the agent runs on the login node and calls ``sbatch``/``squeue``/``sacct``/
``scancel`` directly. One :class:`SlurmRuntime` (one connection, one batched poller) per
cluster target is shared by all jobs of the agent. See docs/slurm.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from nv_eval.protocol import JobSpec, SlurmExecution

from .._executor import Executor
from .._runtime import Runtime
from ._conn import Conn, LocalConn, SshConn, SshTarget
from ._poller import STATE_CATEGORY, Poller, category
from ._runtime import SlurmRuntime
from ._script import ScriptError, render_script

__all__ = [
    "STATE_CATEGORY",
    "Conn",
    "LocalConn",
    "Poller",
    "ScriptError",
    "SlurmExecutor",
    "SlurmRuntime",
    "SshConn",
    "SshTarget",
    "category",
    "conn_for",
    "render_script",
]


def _key(ex: SlurmExecution) -> str:
    if not ex.hostname:
        return "local"
    return f"{ex.username or ''}@{ex.hostname}:{ex.port}"


def conn_for(ex: SlurmExecution) -> Conn:
    """The connection an execution config asks for (not connected yet)."""
    if not ex.hostname:
        return LocalConn()
    return SshConn(
        SshTarget(
            host=ex.hostname,
            port=ex.port,
            username=ex.username,
            identity_file=ex.identity_file,
            known_hosts=ex.known_hosts,
            insecure_skip_host_key_check=ex.insecure_skip_host_key_check,
        )
    )


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self) -> None:
        super().__init__()
        self._runtimes: dict[str, SlurmRuntime] = {}

    def runtime_for(self, job: JobSpec) -> Runtime:
        ex = job.execution
        if not isinstance(ex, SlurmExecution):
            raise ValueError(f"job {job.job_id} has execution type {type(ex).__name__}, the slurm executor needs slurm")
        key = _key(ex)
        rt = self._runtimes.get(key)
        if rt is None:
            rt = SlurmRuntime(conn_for(ex), poll_interval=ex.poll_interval)
            self._runtimes[key] = rt
        return rt

    def runtimes(self) -> Sequence[Runtime]:
        return list(self._runtimes.values())

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        parts: list[str] = []
        groups: dict[str, list[JobSpec]] = {}
        for j in jobs:
            ex = j.execution
            if not isinstance(ex, SlurmExecution):
                parts.append(f"# {j.job_id}: not a slurm job")
                continue
            groups.setdefault(f"{_key(ex)} {ex.placement}", []).append(j)
        for js in groups.values():
            ex = js[0].execution
            assert isinstance(ex, SlurmExecution)
            where = f"remote: ssh {_key(ex)}" if ex.hostname else "local: on the login node"
            rt = SlurmRuntime(LocalConn() if not ex.hostname else _DescribeConn(), poll_interval=ex.poll_interval)
            parts.append(f"# {where}, placement per {ex.placement}")
            parts.append(rt.describe(js))
        return "\n".join(parts)


class _DescribeConn(LocalConn):
    """Never used to connect: only marks a dry-run as remote."""

    remote = True
