"""The contract between the base agent loop and one environment's runtime.

The base loop (``_loop.py``) owns consuming jobs, acking, heartbeats, cancellation,
persisting handles and re-attachment. A runtime implements only how to launch a job
(deploying its model first when asked), watch it to the end, stop it and tear it down.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import anyio
from msgspec import Struct
from nv_eval.protocol import FailureKind, JobSpec, JobState, Results


class Outcome(Struct, kw_only=True):
    """How a job ended, as seen by its runtime."""

    state: Literal["succeeded", "failed", "killed"]
    message: str | None = None
    failure_kind: FailureKind | None = None  # "infrastructure" failures may be retried by policy
    exit_code: int | None = None
    resubmit: bool = False  # the runtime asks the loop to launch the job again (e.g. preempted)


class JobFailed(Exception):
    """Raised by a runtime (usually from ``launch``) to fail the job with a clear one-line message.

    The base loop turns it into a ``failed`` status with ``failure_kind``; anything else a
    runtime raises becomes an ``infrastructure`` failure carrying the exception text.
    """

    def __init__(self, message: str, failure_kind: FailureKind | None = "evaluation", exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.failure_kind = failure_kind
        self.exit_code = exit_code


class JobContext(Protocol):
    """What a runtime may do while it runs one job; every call emits a typed event."""

    job: JobSpec
    agent_id: str
    cancelled: anyio.Event  # set when the user killed the job

    async def status(
        self,
        state: JobState,
        message: str | None = None,
        failure_kind: FailureKind | None = None,
        exit_code: int | None = None,
    ) -> None: ...

    async def log(self, lines: Sequence[str], stream: Literal["stdout", "stderr", "deployment", "agent"] = "stdout") -> None: ...

    async def progress(self, done: int, total: int, rps: float | None = None, eta_s: float | None = None) -> None: ...

    async def result(self, results: Results) -> None: ...

    async def deployment(
        self,
        deployment_id: str,
        state: Literal["starting", "loading", "ready", "failed", "stopped"],
        url: str | None = None,
        message: str | None = None,
        last_logs: Sequence[str] = (),
    ) -> None: ...

    async def save_handle(self, handle: dict[str, Any]) -> None:
        """Persist what re-attachment needs (container id, pid, slurm job id, log offsets)."""
        ...

    def stage_handle(self, handle: dict[str, Any]) -> None:
        """Update the handle in memory only; it is persisted atomically with the next event's seq
        (or the next ``save_handle``). Stage log offsets just before emitting the lines they cover,
        so a re-attach after a crash neither repeats nor skips those lines."""
        ...


class Runtime(abc.ABC):
    """One environment's way to run jobs (local process, Docker, Slurm, Lepton, ...)."""

    name: ClassVar[str]
    capabilities: ClassVar[Sequence[str]] = ()

    @abc.abstractmethod
    async def launch(self, ctx: JobContext) -> dict[str, Any]:
        """Deploy the model if the job asks (sharing the group's deployment) and start the job.

        Returns the handle (JSON-able) that ``watch``/``stop``/``teardown`` receive, also
        after an agent restart. Must emit ``deploying``/``running`` status events.
        """

    @abc.abstractmethod
    async def watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        """Follow the job to its end: stream logs, progress and the result. Called again with
        the saved handle after an agent restart (re-attachment), so it must not relaunch."""

    @abc.abstractmethod
    async def stop(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        """Kill the job promptly (seconds)."""

    @abc.abstractmethod
    async def teardown(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        """Remove what the job created; release its share of the deployment (the last job of a
        deployment group tears the deployment down)."""

    async def recover(self, live_jobs: dict[str, dict[str, Any]]) -> None:  # noqa: B027
        """After a restart: clean up what belongs to no live job (``job_id -> handle``)."""

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        """Exactly what would be launched for these jobs (dry-run): commands, container specs, scripts."""
        return "\n".join(f"{j.job_id}: {j.task.name}" for j in jobs)

    async def aclose(self) -> None:  # noqa: B027
        """Release runtime-wide resources (connections, pollers)."""


async def emit_result_once(ctx: JobContext, handle: dict[str, Any], results: Results) -> Outcome:
    """Emit the job's result event unless an earlier watch (before a restart) already did, then
    report success; the flag lives in the saved handle so a re-attach never emits it twice."""
    if not handle.get("result_emitted"):
        await ctx.result(results)
        handle["result_emitted"] = True
        await ctx.save_handle(handle)
    return Outcome(state="succeeded", exit_code=0)
