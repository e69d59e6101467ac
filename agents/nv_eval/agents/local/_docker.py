"""The local DOCKER runtime: one container per job, and shared model deployment containers.

``launch`` prepares the network (``host``; ``bridge`` = a labelled per-invocation bridge
network shared with the deployment container; or a named network), joins or starts the
job's deployment group (``nv_eval.agents.deploy``), makes sure the image is present
(pulling only when absent) and starts the benchmark container running the harness command
of docs/contracts.md against the target URL. ``watch`` follows stdout/stderr live (stdout
progress JSON -> progress events, other lines -> log events, mirrored into
``<task_dir>/logs/``), and turns ``results.json`` into the result event. The handle holds
the container id and the timestamp of the last line handled per stream, so a restarted
agent re-attaches by following the same container from there. ``recover`` removes
containers (found by label) that belong to no live job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import msgspec
import structlog
from nv_eval.protocol import JobSpec, Results

from .._harness import progress_of
from .._runtime import JobContext, JobFailed, Outcome, Runtime, emit_result_once
from ..deploy._docker_shared import DockerDeployments
from ..deploy.specs import DeploymentSpecError, group_of
from ._docker_args import DockerArgsError
from ._docker_follow import follow_lines
from ._docker_ops import (
    API_TIMEOUT,
    create_and_start,
    ensure_image,
    ensure_network,
    remove_container,
    remove_network_if_unused,
)
from ._docker_spec import (
    LABEL_AGENT,
    LABEL_INVOCATION,
    LABEL_JOB,
    LABEL_ROLE,
    benchmark_spec,
    bridge_network_name,
    deployment_base_url,
    deployment_container_spec,
    execution,
    network_for,
)

log = structlog.get_logger("nv_eval.agents.local.docker")
STOP_GRACE_S = 3.0


class DockerRuntime(Runtime):
    """Runs each job in a container (``execution.runtime: docker``)."""

    name = "docker"
    capabilities = ("docker",)

    def __init__(self, env: Any = None, *, linger_s: float = 30.0) -> None:
        self.env = env
        self._client: aiodocker.Docker | None = None
        self._net_locks: dict[str, anyio.Lock] = {}  # docker's duplicate check on network names is racy
        self.deployments = DockerDeployments(env, self._docker, linger_s=linger_s)

    @property
    def agent_id(self) -> str:
        return str(getattr(self.env, "agent_id", "") or "")

    def _docker(self) -> aiodocker.Docker:
        if self._client is None:
            self._client = aiodocker.Docker()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------ dry-run
    def describe(self, jobs: Sequence[JobSpec]) -> str:
        out: list[str] = []
        seen: set[str] = set()
        for job in jobs:
            try:
                base: str | None = None
                pair = deployment_container_spec(job)
                if pair is not None:
                    spec, cspec = pair
                    base = deployment_base_url(spec, network_for(job), group_of(job))
                    if group_of(job) not in seen:
                        seen.add(group_of(job))
                        shared = len(job.group_jobs) or 1
                        out.append(f"# deployment {group_of(job)} ({spec.type}, shared by {shared} job(s))")
                        out.append(_render({**cspec.describe(), "health": spec.health_path}))
                if network_for(job) == bridge_network_name(job.invocation_id) and job.invocation_id not in seen:
                    seen.add(job.invocation_id)
                    out.append(f"# network {network_for(job)} (bridge, created for this invocation, removed at the end)")
                bspec = benchmark_spec(job, base)
                out.append(f"# job {job.job_id} ({job.task.name}) -> {job.task_dir}")
                out.append(_render(bspec.describe()))
            except (DeploymentSpecError, DockerArgsError, ValueError) as e:
                out.append(f"# job {job.job_id} ({job.task.name}): error: {e}")
        return "\n".join(out)

    # ------------------------------------------------------------------ launch
    async def launch(self, ctx: JobContext) -> dict[str, Any]:
        job = ctx.job
        docker = self._docker()
        handle: dict[str, Any] = {"task_dir": job.task_dir}
        try:
            network = network_for(job)
            pair = deployment_container_spec(job, self.agent_id)
            benchmark_spec(job, None)  # validates the docker args before anything starts
        except (DeploymentSpecError, DockerArgsError) as e:
            raise JobFailed(str(e), failure_kind="evaluation") from None
        if network == bridge_network_name(job.invocation_id):
            handle["network"] = network
            async with self._net_locks.setdefault(network, anyio.Lock()):
                await ensure_network(docker, network, job.invocation_id)
        base: str | None = None
        if pair is not None:
            handle["deployment_group"] = group_of(job)
            await ctx.save_handle(handle)  # teardown releases our share even if the launch fails
            base = await self.deployments.acquire(ctx, self.agent_id)
        elif not job.endpoint.url:
            raise JobFailed("the job has no endpoint URL (set target.api_endpoint.url or a deployment)")
        spec = benchmark_spec(job, base, self.agent_id)
        await ensure_image(docker, spec.image)
        logs = Path(job.task_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        container, missing = await create_and_start(docker, spec)
        handle.update(container_id=container.id, name=spec.name, image=spec.image, stdout_ns=0, stderr_ns=0)
        await ctx.save_handle(handle)
        if missing:
            await ctx.log([f"env vars not set on the agent, not passed to the container: {', '.join(missing)}"], "agent")
        await ctx.status("running")
        return handle

    # ------------------------------------------------------------------ watch
    async def watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        if not handle.get("container_id"):
            return Outcome(
                state="failed",
                message="the agent stopped before the container was started",
                failure_kind="infrastructure",
                resubmit=True,
            )
        docker = self._docker()
        try:
            with anyio.fail_after(API_TIMEOUT):
                container = await docker.containers.get(handle["container_id"])
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise
            return Outcome(
                state="failed",
                message=f"container {handle.get('name')} disappeared (removed from outside?)",
                failure_kind="infrastructure",
                resubmit=not ctx.cancelled.is_set(),
            )
        logs = Path(handle["task_dir"]) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, ctx, handle, container, "stdout", logs / "stdout.log")
            tg.start_soon(self._pump, ctx, handle, container, "stderr", logs / "stderr.log")
        with anyio.fail_after(60):  # the streams ended: the container has stopped
            state = await container.wait()
        rc = int(state.get("StatusCode", -1))
        await ctx.save_handle(handle)
        return await self._outcome(ctx, handle, rc)

    async def _pump(
        self, ctx: JobContext, handle: dict[str, Any], container: Any, stream: str, mirror: Path
    ) -> None:
        key = f"{stream}_ns"
        stage = getattr(ctx, "stage_handle", None)
        pending: list[str] = []
        with mirror.open("a", encoding="utf-8") as f:

            async def flush() -> None:
                if pending:
                    await ctx.log(list(pending), stream)  # type: ignore[arg-type]
                    pending.clear()

            async for ns, line in follow_lines(container, stream, int(handle.get(key) or 0)):
                f.write(line + "\n")
                f.flush()
                handle[key] = ns
                if stage is not None:
                    stage(handle)  # persisted with the next event's seq: re-attach never repeats a line
                prog = progress_of(line) if stream == "stdout" else None
                if prog is None:
                    pending.append(line)
                    await flush()
                    continue
                await flush()
                if prog.get("event") == "progress":
                    await ctx.progress(
                        int(prog.get("done", 0)), int(prog.get("total", 0)), prog.get("rps"), prog.get("eta_s")
                    )
            await flush()

    async def _outcome(self, ctx: JobContext, handle: dict[str, Any], rc: int) -> Outcome:
        if ctx.cancelled.is_set():
            return Outcome(state="killed", exit_code=rc)
        task_dir = Path(handle["task_dir"])
        if rc == 0:
            path = task_dir / "results.json"
            try:
                if ctx.job.task.harness != "builtin" and not path.exists():
                    from ..external import parse_external_results

                    path.write_bytes(msgspec.json.encode(parse_external_results(ctx.job, task_dir)))
                results = msgspec.json.decode(path.read_bytes(), type=Results)
            except (OSError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as e:
                return Outcome(
                    state="failed",
                    message=f"the container exited 0 but {path} is missing or invalid: {e}",
                    failure_kind="evaluation",
                    exit_code=rc,
                )
            return await emit_result_once(ctx, handle, results)
        last = _last_line(task_dir / "logs" / "stderr.log")
        if rc in (2, 3):
            return Outcome(state="failed", message=last or f"harness exit code {rc}", failure_kind="evaluation", exit_code=rc)
        if rc > 128:
            return Outcome(
                state="failed",
                message=f"the container was terminated by signal {rc - 128}" + (f": {last}" if last else ""),
                failure_kind="infrastructure",
                exit_code=rc,
            )
        return Outcome(state="failed", message=last or f"exit code {rc}", failure_kind="evaluation", exit_code=rc)

    # ------------------------------------------------------------------ stop / teardown
    async def stop(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        """SIGTERM (the harness keeps its cache and exits 143), SIGKILL after ``STOP_GRACE_S``.

        The follower in ``watch`` ends when the container stops; removal is ``teardown``'s.
        """
        cid = handle.get("container_id")
        if not cid:
            return
        try:
            with anyio.fail_after(API_TIMEOUT):
                c = await self._docker().containers.get(cid)
        except aiodocker.DockerError:
            return  # already gone
        for sig in ("SIGTERM", "SIGKILL"):
            try:
                with anyio.fail_after(API_TIMEOUT):
                    await c.kill(signal=sig)
            except aiodocker.DockerError:
                return  # not running any more (409) or gone (404)
            with anyio.move_on_after(STOP_GRACE_S):
                await c.wait()
                return

    async def teardown(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        docker = self._docker()
        with anyio.CancelScope(shield=True):
            if handle.get("container_id"):
                await remove_container(docker, handle["container_id"])
            group = handle.get("deployment_group")
            if group:
                await self.deployments.release(ctx, group, ctx.job.job_id, killed=ctx.cancelled.is_set())
            net = handle.get("network")
            if net and not await self._invocation_busy(ctx.job.invocation_id):
                await remove_network_if_unused(docker, net)

    async def _invocation_busy(self, invocation_id: str) -> bool:
        with anyio.fail_after(API_TIMEOUT):
            found = await self._docker().containers.list(all=True, filters={"label": [f"{LABEL_INVOCATION}={invocation_id}"]})
        return bool(found)

    async def recover(self, live_jobs: dict[str, dict[str, Any]]) -> None:
        """Remove this agent's containers (by label) that belong to no live job; unused networks."""
        if not self.agent_id:
            return  # unbound (no agent): other agents may share this dockerd, touch nothing
        docker = self._docker()
        labels = [f"{LABEL_ROLE}=benchmark", f"{LABEL_AGENT}={self.agent_id}"]
        with anyio.fail_after(API_TIMEOUT):
            found = await docker.containers.list(all=True, filters={"label": labels})
        for c in found:
            job_id = (c._container.get("Labels") or {}).get(LABEL_JOB)
            if job_id not in live_jobs:
                log.info("removing orphan benchmark container", job_id=job_id, id=c.id[:12])
                await remove_container(docker, c.id)
        await self.deployments.recover(live_jobs)
        live_invocations = {j.split(".")[0] for j in live_jobs}
        with anyio.fail_after(API_TIMEOUT):
            nets = await docker.networks.list(filters={"label": [f"{LABEL_ROLE}=network"]})
        for n in nets:
            inv = (n.get("Labels") or {}).get(LABEL_INVOCATION)
            if inv not in live_invocations:
                await remove_network_if_unused(docker, n["Name"])


def _render(spec: dict[str, Any]) -> str:
    """One ``key: <JSON value>`` line per field (commands stay on one line, exact and copyable)."""
    return "\n".join(f"  {k}: {json.dumps(v)}" for k, v in spec.items())


def _last_line(p: Path) -> str | None:
    try:
        with p.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


__all__ = ["DockerRuntime", "execution"]
