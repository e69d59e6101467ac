"""Shared deployment containers: one per ``deployment_group``, refcounted, found again by label.

The first job of a group creates the container (labels ``nv-eval.role=deployment``,
``nv-eval.deployment-group``, ``nv-eval.invocation``) and polls its health path, emitting
deployment events (starting, loading, ready, failed with the server's last log lines); the
others join it. Users and finished jobs are persisted in the agent's runtime state, so a
restarted agent knows who shares what; the container itself is found by its label. The
last job of the group to end removes it; when jobs of the group have not arrived yet, it
lingers ``linger_s`` for them (not after a kill: then it goes at once).
"""

from __future__ import annotations

import time
from typing import Any

import aiodocker
import aiohttp
import anyio
import structlog
from nv_eval.protocol import JobSpec

from .._runtime import JobContext, JobFailed
from ..local._docker_ops import (
    container_ip,
    create_and_start,
    ensure_image,
    last_logs,
    remove_container,
    remove_network_if_unused,
)
from ..local._docker_spec import (
    LABEL_AGENT,
    LABEL_GROUP,
    LABEL_ROLE,
    deployment_base_url,
    deployment_container_spec,
    network_for,
)
from .specs import group_of

log = structlog.get_logger("nv_eval.agents.deploy")
STATE_NAME = "docker-deployments"


class DockerDeployments:
    """Refcounted deployment containers per group (records in ``env`` runtime state when bound)."""

    def __init__(self, env: Any, docker: Any, *, linger_s: float = 30.0, poll_s: float = 0.25) -> None:
        self.env = env
        self._docker = docker  # callable returning the aiodocker client
        self.linger_s = linger_s
        self.poll_s = poll_s
        self._locks: dict[str, anyio.Lock] = {}
        self._mem: dict[str, Any] = {}  # records when no agent env is bound (tests, tools)

    # ------------------------------------------------------------------ records
    def _load(self) -> dict[str, Any]:
        return self.env.runtime_state(STATE_NAME) if self.env is not None else dict(self._mem)

    def _save(self, data: dict[str, Any]) -> None:
        if self.env is not None:
            self.env.save_runtime_state(STATE_NAME, data)
        else:
            self._mem = dict(data)

    def _lock(self, group: str) -> anyio.Lock:
        return self._locks.setdefault(group, anyio.Lock())

    async def _running(self, container_id: str) -> bool:
        try:
            with anyio.fail_after(30):
                info = await (await self._docker().containers.get(container_id)).show()
        except aiodocker.DockerError:
            return False
        return bool(info.get("State", {}).get("Running"))

    # ------------------------------------------------------------------ acquire / release
    async def acquire(self, ctx: JobContext, agent_id: str = "") -> str:
        """Join or start the job's group deployment; returns its base URL as benchmark containers see it."""
        job = ctx.job
        group = group_of(job)
        async with self._lock(group):
            data = self._load()
            rec = data.get(group)
            if rec is not None and rec.get("state") == "ready" and await self._running(rec["container_id"]):
                if job.job_id not in rec["users"]:
                    rec["users"].append(job.job_id)
                self._save(data)
                await ctx.status("deploying")
                await ctx.deployment(group, "ready", url=rec["url"], message="shared deployment already running")
                return str(rec["url"])
            if rec is not None:  # dead or half-started: clean it
                await remove_container(self._docker(), rec["container_id"])
                data.pop(group, None)
                self._save(data)
            return await self._start(ctx, job, group, agent_id)

    async def _start(self, ctx: JobContext, job: JobSpec, group: str, agent_id: str) -> str:
        docker = self._docker()
        await ctx.status("deploying")
        pair = deployment_container_spec(job, agent_id)
        assert pair is not None
        spec, cspec = pair
        try:
            await ensure_image(docker, spec.image)
        except JobFailed as e:
            await ctx.deployment(group, "failed", message=e.message)
            raise
        container, missing = await create_and_start(docker, cspec)
        network = network_for(job)
        url = deployment_base_url(spec, network, group)
        data = self._load()
        data[group] = {
            "container_id": container.id,
            "name": cspec.name,
            "url": url,
            "state": "starting",
            "users": [job.job_id],
            "done": [],
            "group_jobs": list(job.group_jobs) or [job.job_id],
            "invocation_id": job.invocation_id,
            "network": network,
            "started_at": time.time(),
        }
        self._save(data)
        if missing:
            await ctx.log([f"deployment: env vars not set on the agent, not passed: {', '.join(missing)}"], "agent")
        await ctx.deployment(group, "starting", url=url, message=f"{spec.type} container {cspec.name} ({spec.image})")
        # the agent polls from the host: on a bridge network it uses the container's IP
        if network == "host":
            health = f"http://127.0.0.1:{spec.port}{spec.health_path}"
        else:
            ip = await container_ip(docker, container.id, network)
            health = f"http://{ip}:{spec.port}{spec.health_path}"
        ok, why = await self._wait_ready(ctx, group, container.id, health, spec.readiness_timeout)
        if not ok:
            tail = await last_logs(docker, container.id, 20)
            await remove_container(docker, container.id)
            data = self._load()
            data.pop(group, None)
            self._save(data)
            await ctx.deployment(group, "failed", url=url, message=why, last_logs=tail)
            text = " | ".join(tail[-10:]) if tail else "(no output)"
            raise JobFailed(f"deployment {group} failed: {why}; last server log lines: {text}", "infrastructure")
        data = self._load()
        data[group]["state"] = "ready"
        self._save(data)
        await ctx.deployment(group, "ready", url=url, last_logs=await last_logs(docker, container.id, 5))
        return url

    async def _wait_ready(
        self, ctx: JobContext, group: str, container_id: str, url: str, timeout: float
    ) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        loading_sent = False
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if ctx.cancelled.is_set():
                    return False, "killed while the deployment was starting"
                if not await self._running(container_id):
                    return False, "the server container exited before it was ready"
                try:
                    async with http.get(url) as r:
                        if r.status == 200:
                            return True, ""
                        last = f"HTTP {r.status}"
                        if not loading_sent:  # it answers: the model is loading
                            loading_sent = True
                            await ctx.deployment(group, "loading", message=last)
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    last = type(e).__name__
                await anyio.sleep(self.poll_s)
        return False, f"not ready within {timeout:g}s ({url}: {last})"

    async def release(self, ctx: JobContext | None, group: str, job_id: str, *, killed: bool = False) -> None:
        """The job ``job_id`` no longer uses ``group``; remove the container when nobody will."""
        async with self._lock(group):
            data = self._load()
            rec = data.get(group)
            if rec is None:
                return
            if job_id in rec["users"]:
                rec["users"].remove(job_id)
            if job_id not in rec["done"]:
                rec["done"].append(job_id)
            self._save(data)
            if rec["users"]:
                return
            if killed or set(rec["group_jobs"]) <= set(rec["done"]) or self.env is None:
                await self._stop(group, ctx)
                return
        self.env.spawn(lambda: self._linger(group))

    async def _linger(self, group: str) -> None:
        await anyio.sleep(self.linger_s)
        async with self._lock(group):
            rec = self._load().get(group)
            if rec is not None and not rec["users"]:
                await self._stop(group, None)

    async def _stop(self, group: str, ctx: JobContext | None) -> None:
        data = self._load()
        rec = data.pop(group, None)
        if rec is None:
            return
        with anyio.CancelScope(shield=True):
            await remove_container(self._docker(), rec["container_id"])
            net = str(rec.get("network") or "")
            if net.startswith("nv-eval-"):  # the per-invocation bridge network, once nothing uses it
                await remove_network_if_unused(self._docker(), net)
        self._save(data)
        log.info("deployment removed", group=group)
        if ctx is not None:
            await ctx.deployment(group, "stopped", url=rec.get("url"))

    async def recover(self, live_jobs: dict[str, dict[str, Any]]) -> None:
        """After a restart: drop users that are not live; remove deployment containers no live job uses."""
        live_groups = {h.get("deployment_group") for h in live_jobs.values() if h.get("deployment_group")}
        data = self._load()
        for group in list(data):
            rec = data[group]
            rec["users"] = [j for j in rec["users"] if j in live_jobs]
            if not rec["users"] and group not in live_groups:
                await remove_container(self._docker(), rec["container_id"])
                data.pop(group)
        self._save(data)
        # containers found by label whose group no live job uses (records lost or never written)
        if self.env is None:
            return  # unbound: other agents may share this dockerd, touch nothing found by label
        labels = [f"{LABEL_ROLE}=deployment", f"{LABEL_AGENT}={self.env.agent_id}"]  # only this agent's
        with anyio.fail_after(30):
            found = await self._docker().containers.list(all=True, filters={"label": labels})
        for c in found:
            group = (c._container.get("Labels") or {}).get(LABEL_GROUP)
            if group not in live_groups:
                log.info("removing orphan deployment container", group=group, id=c.id[:12])
                await remove_container(self._docker(), c.id)
