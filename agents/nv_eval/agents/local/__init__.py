"""The ``local`` executor: runs jobs on this machine, as processes or Docker containers.

``execution.runtime`` picks the runtime: ``process`` -> :class:`ProcessRuntime`;
``docker`` -> ``nv_eval.agents.local._docker.DockerRuntime`` (imported lazily; when it is
unavailable the job fails with a clear message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from nv_eval.protocol import JobSpec, LocalExecution

from .._executor import Executor
from .._runtime import Runtime
from ._process import ProcessRuntime

log = structlog.get_logger("nv_eval.agents.local")

__all__ = ["LocalExecutor", "ProcessRuntime"]


class LocalExecutor(Executor):
    name = "local"

    def __init__(self) -> None:
        super().__init__()
        self._runtimes: dict[str, Runtime] = {}
        self._docker_error: str | None = None

    def _process(self) -> Runtime:
        if "process" not in self._runtimes:
            self._runtimes["process"] = ProcessRuntime(self.env)
        return self._runtimes["process"]

    def _docker(self) -> Runtime:
        if "docker" not in self._runtimes:
            try:
                from ._docker import DockerRuntime  # type: ignore[import-not-found,unused-ignore]
            except ImportError as e:
                raise ValueError(f"the docker runtime is not available on this agent: {e}") from None
            cls: Any = DockerRuntime
            try:
                rt = cls(self.env)
            except TypeError:
                rt = cls()
            self._runtimes["docker"] = rt
        return self._runtimes["docker"]

    def runtime_for(self, job: JobSpec) -> Runtime:
        ex = job.execution
        kind = ex.runtime if isinstance(ex, LocalExecution) else "process"
        if kind == "process":
            return self._process()
        if kind == "docker":
            return self._docker()
        raise ValueError(f"unknown local runtime {kind!r} (expected process or docker)")

    def runtimes(self) -> Sequence[Runtime]:
        self._process()
        if "docker" not in self._runtimes and self._docker_error is None:
            try:
                self._docker()
            except ValueError as e:
                self._docker_error = str(e)
                log.info("docker runtime unavailable", error=str(e))
        return list(self._runtimes.values())

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        parts: list[str] = []
        by_kind: dict[str, list[JobSpec]] = {}
        for j in jobs:
            kind = j.execution.runtime if isinstance(j.execution, LocalExecution) else "process"
            by_kind.setdefault(kind, []).append(j)
        for kind, js in by_kind.items():
            try:
                rt = self.runtime_for(js[0])
            except ValueError as e:
                parts.append(f"# {kind}: {e}")
                continue
            parts.append(rt.describe(js))
        return "\n".join(parts)
