"""The Slurm runtime: submit a job's sbatch script, follow it, resubmit by policy, kill it.

The handle (persisted by the loop, JSON) holds the Slurm job id, the task dir on the
cluster, the resubmit count and the byte offsets of every tailed file, so a restarted
agent's ``watch`` continues exactly where the last one stopped, without resubmitting.
States come from the shared batched :class:`~._poller.Poller`; a poll that fails (SSH
down) changes nothing, and only an outage longer than ``max_outage`` fails the job.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import structlog
from nv_eval.protocol import JobSpec, Results, SlurmExecution

from .._runtime import JobContext, JobFailed, Outcome, Runtime, emit_result_once
from ._alloc import alloc_dir, alloc_handle, task_script, worker_script
from ._conn import Conn, ConnError
from ._poller import Poller, category
from ._script import Paths, ScriptError, check_script, remote_task_dir, render_script, sbatch_argv, secret_names
from ._submit import Submitter

log = structlog.get_logger("nv_eval.agents.slurm")


def _lines(data: bytes, final: bool) -> tuple[list[str], int]:
    """Complete lines in ``data`` (all of it when ``final``) and the bytes they use."""
    if not data:
        return [], 0
    end = len(data) if final else data.rfind(b"\n") + 1
    if end <= 0:
        return [], 0
    text = data[:end].decode("utf-8", "replace")
    return [ln for ln in text.splitlines()], end


def _json_event(line: str) -> dict[str, Any] | None:
    s = line.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("event") in ("progress", "done") else None


class SlurmRuntime(Runtime):
    """Runs one job as one sbatch job on a cluster reached through ``conn``."""

    name = "slurm"
    capabilities = ("slurm",)

    def __init__(self, conn: Conn, *, poll_interval: float = 5.0, max_outage: float = 1800.0) -> None:
        self.conn = conn
        self.poller = Poller(conn, poll_interval)
        self.submitter = Submitter(conn)
        self._allocs: dict[str, str] = {}  # allocation dir -> slurm id of its current allocation
        self._alloc_lock = anyio.Lock()
        self._alloc_users: dict[str, set[str]] = {}  # allocation slurm id -> job ids watching it
        self._cancelled: set[str] = set()  # job ids whose queued task script was withdrawn
        self._stopping: set[str] = set()  # job ids being stopped
        self.alloc_linger = 30
        self.max_outage = max_outage

    # ------------------------------------------------------------------ dry-run
    def describe(self, jobs: Sequence[JobSpec]) -> str:
        out: list[str] = []
        where = "over ssh" if self.conn.remote else "on this login node"
        seen: set[str] = set()
        for job in jobs:
            paths = Paths(remote_task_dir(job))
            if isinstance(job.execution, SlurmExecution) and job.execution.placement == "invocation":
                a = alloc_dir(job)
                try:
                    if a not in seen:
                        seen.add(a)
                        out.append(f"# allocation of invocation {job.invocation_id}, {where}: {shlex.join(sbatch_argv(Paths(a)))}")
                        out.append(worker_script(job, self.alloc_linger))
                    out.append(f"# job {job.job_id} ({job.task.name}): task script {a}/queue/{int(job.index)}.sh")
                    out.append(task_script(job))
                except ScriptError as e:
                    out.append(f"# error: {e}")
                continue
            out.append(f"# job {job.job_id} ({job.task.name}), {where}: {shlex.join(sbatch_argv(paths))}")
            try:
                out.append(render_script(job, paths.task_dir))
            except ScriptError as e:
                out.append(f"# error: {e}")
        return "\n".join(out)

    # ------------------------------------------------------------------ submit
    def _secrets(self, job: JobSpec) -> dict[str, str]:
        values: dict[str, str] = {}
        for n in secret_names(job):
            v = os.environ.get(n)
            if v is None:
                raise JobFailed(f"secret env var {n} is not set in the agent's environment", failure_kind="evaluation")
            if "\0" in v:
                raise JobFailed(f"secret env var {n} holds a NUL byte", failure_kind="evaluation")
            values[n] = v
        return values

    async def _submit(self, job: JobSpec, paths: Paths) -> str:
        secrets = self._secrets(job) if self.conn.remote else {}
        if not self.conn.remote:
            self._secrets(job)  # fail early when a secret is missing; sbatch inherits the env
        try:
            line = await self.submitter.submit(paths, secrets)
        except ConnError as e:
            raise JobFailed(f"cannot submit: {e}", failure_kind="infrastructure") from None
        if not line.startswith("OK "):
            raise JobFailed(f"sbatch refused the job: {line.removeprefix('ERR ')[:300]}", failure_kind="evaluation")
        sid = line[3:].strip().split(";", 1)[0]
        if not sid.isdigit():
            raise JobFailed(f"unexpected sbatch output {line[:100]!r}", failure_kind="infrastructure")
        self.poller.wake()
        return sid

    async def launch(self, ctx: JobContext) -> dict[str, Any]:
        job = ctx.job
        if not isinstance(job.execution, SlurmExecution):
            raise JobFailed(f"job {job.job_id} is not a slurm job")
        if job.execution.placement == "invocation":
            return await self._launch_alloc(ctx)
        paths = Paths(remote_task_dir(job))
        try:
            script = render_script(job, paths.task_dir)
            check_script(script)
        except ScriptError as e:
            raise JobFailed(str(e), failure_kind="evaluation") from None
        try:
            await self.conn.mkdir(paths.logs)
            await self.conn.write(paths.script, script.encode(), 0o700)
        except ConnError as e:
            raise JobFailed(f"cannot write the job script: {e}", failure_kind="infrastructure") from None
        sid = await self._submit(job, paths)
        handle: dict[str, Any] = {
            "task_dir": paths.task_dir,
            "slurm_job_id": sid,
            "slurm_job_ids": [sid],
            "resubmits": 0,
            "offsets": {},
            "submitted_at": time.time(),
        }
        await ctx.save_handle(handle)
        await ctx.log([f"submitted Slurm job {sid} ({paths.script})"], "agent")
        await ctx.status("deploying", message=f"Slurm job {sid} queued")
        return handle

    # ------------------------------------------------------------------ tailing
    async def _read_new(self, handle: dict[str, Any], path: str, final: bool) -> list[str]:
        offs: dict[str, int] = handle.setdefault("offsets", {})
        off = int(offs.get(path, 0))
        data = await self.conn.read(path, off)
        if data is None:
            return []
        lines, used = _lines(data, final)
        if used:
            offs[path] = off + used
        return lines

    async def _pump(self, ctx: JobContext, handle: dict[str, Any], *, final: bool = False) -> None:
        paths = Paths(handle["task_dir"])
        sid = handle["slurm_job_id"]
        emitted = False
        plain = [ln for ln in await self._read_new(handle, paths.stdout, final) if _json_event(ln) is None]
        if plain:
            await ctx.log(plain, "stdout")
            emitted = True
        err = await self._read_new(handle, paths.stderr, final)
        if err:
            await ctx.log(err, "stderr")
            emitted = True
        sl = await self._read_new(handle, paths.slurm_out_for(sid), final)
        if sl:
            await ctx.log([f"[slurm {sid}] {ln}" for ln in sl], "agent")
            emitted = True
        last: dict[str, Any] | None = None
        for ln in await self._read_new(handle, paths.progress, final):
            ev = _json_event(ln)
            if ev is not None and ev.get("event") == "progress":
                last = ev
        if last is not None:
            await ctx.progress(int(last.get("done", 0)), int(last.get("total", 0)), last.get("rps"), last.get("eta_s"))
            emitted = True
        if emitted:
            await ctx.save_handle(handle)

    async def _safe_pump(self, ctx: JobContext, handle: dict[str, Any], *, final: bool = False) -> None:
        try:
            await self._pump(ctx, handle, final=final)
        except ConnError as e:
            log.warning("log tail failed (will retry)", job_id=ctx.job.job_id, error=str(e))
        except Exception as e:  # noqa: BLE001 - an SFTP error on a log file never fails the job
            log.warning("log tail error (will retry)", job_id=ctx.job.job_id, error=repr(e))

    # ------------------------------------------------------------------ watch
    async def watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        if handle.get("placement") == "invocation":
            return await self._watch_alloc(ctx, handle)
        sid = str(handle["slurm_job_id"])
        self.poller.add(sid)
        try:
            return await self._watch(ctx, handle)
        finally:
            self.poller.remove(str(handle["slurm_job_id"]))

    async def _watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        unseen_since = time.monotonic()
        last_reason = ""
        while True:
            sid = str(handle["slurm_job_id"])
            await self.poller.wait_next()
            await self._safe_pump(ctx, handle)
            if time.monotonic() - self.poller.last_ok > self.max_outage:
                return Outcome(
                    state="failed",
                    message=f"cluster unreachable for {self.max_outage:.0f}s: {self.poller.last_error}",
                    failure_kind="infrastructure",
                )
            info = self.poller.info.get(sid)
            if info is None:
                if self.poller.last_error is None and time.monotonic() - unseen_since > 300:
                    return Outcome(
                        state="failed",
                        message=f"Slurm job {sid} is neither in squeue nor in sacct",
                        failure_kind="infrastructure",
                    )
                continue
            unseen_since = time.monotonic()
            cat = category(info.state)
            if cat == "queued":
                if info.reason and info.reason not in ("None", last_reason):
                    last_reason = info.reason
                    await ctx.log([f"Slurm job {sid} {info.state}: {info.reason}"], "agent")
                continue
            if cat == "running" or cat is None:
                if cat is None:
                    log.warning("unknown Slurm state, treated as running", state=info.state, slurm_job_id=sid)
                if handle.get("running_for") != sid:
                    handle["running_for"] = sid
                    await ctx.save_handle(handle)
                    await ctx.status("running", message=f"Slurm job {sid} running")
                continue
            # the job left the queue
            await self._safe_pump(ctx, handle, final=True)
            if cat == "resubmit" and not ctx.cancelled.is_set():
                ex = ctx.job.execution
                limit = ex.max_resubmits if isinstance(ex, SlurmExecution) else 0
                n = int(handle.get("resubmits", 0))
                if n >= limit:
                    return Outcome(
                        state="failed",
                        message=f"Slurm job {sid} ended {info.state}; gave up after {n} resubmit(s)",
                        failure_kind="infrastructure",
                    )
                new = await self._submit(ctx.job, Paths(handle["task_dir"]))
                handle["resubmits"] = n + 1
                handle["slurm_job_id"] = new
                handle.setdefault("slurm_job_ids", []).append(new)
                self.poller.remove(sid)
                self.poller.add(new)
                await ctx.save_handle(handle)
                await ctx.log([f"Slurm job {sid} ended {info.state}; resubmitted as {new} ({n + 1}/{limit})"], "agent")
                await ctx.status("deploying", message=f"{info.state}: resubmitted as Slurm job {new} ({n + 1}/{limit})")
                last_reason = ""
                continue
            return await self._outcome(ctx, handle, sid, info.state, info.exit_code)

    async def _exit_code(self, handle: dict[str, Any], sid: str) -> int | None:
        try:
            data = await self.conn.read(Paths(handle["task_dir"]).exit_code_for(sid))
        except ConnError:
            return None
        try:
            return int(data.strip()) if data else None
        except ValueError:
            return None

    async def _last_stderr(self, handle: dict[str, Any]) -> str | None:
        path = Paths(handle["task_dir"]).stderr
        off = max(0, int(handle.get("offsets", {}).get(path, 0)) - 4096)
        try:
            data = await self.conn.read(path, off, 8192)
        except ConnError:
            return None
        lines = [ln for ln in (data or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1] if lines else None

    async def _outcome(self, ctx: JobContext, handle: dict[str, Any], sid: str, state: str, rc: int | None) -> Outcome:
        cat = category(state)
        rc_file = await self._exit_code(handle, sid)
        rc = rc_file if rc_file is not None else rc
        if ctx.cancelled.is_set() or cat == "cancelled":
            msg = None if ctx.cancelled.is_set() else f"Slurm job {sid} was cancelled outside nv-eval"
            return Outcome(state="killed", message=msg, exit_code=rc)
        if cat == "oom":
            return Outcome(
                state="failed",
                message=f"Slurm job {sid} ran out of memory (raise execution.mem)",
                failure_kind="infrastructure",
                exit_code=rc,
            )
        if cat == "resubmit":
            return Outcome(state="failed", message=f"Slurm job {sid} ended {state}", failure_kind="infrastructure")
        if cat == "succeeded" and rc in (0, None):
            path = Paths(handle["task_dir"]).results
            try:
                data = await self.conn.read(path, 0, 64 << 20)
                if data is None:
                    raise FileNotFoundError(path)
                results = msgspec.json.decode(data, type=Results)
            except (ConnError, OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                return Outcome(
                    state="failed",
                    message=f"Slurm job {sid} completed but {path} is missing or invalid: {e}",
                    failure_kind="evaluation",
                    exit_code=rc,
                )
            return await emit_result_once(ctx, handle, results)
        last = await self._last_stderr(handle)
        if rc is not None and rc > 128:
            return Outcome(
                state="failed",
                message=f"the harness was terminated by signal {rc - 128}" + (f": {last}" if last else ""),
                failure_kind="infrastructure",
                exit_code=rc,
            )
        return Outcome(
            state="failed",
            message=last or f"Slurm job {sid} ended {state} (exit code {rc})",
            failure_kind="evaluation",
            exit_code=rc,
        )

    # ------------------------------------------------------------------ stop / teardown
    async def stop(self, ctx: JobContext, handle: dict[str, Any], timeout: float = 8.0) -> None:
        """``scancel`` and verify the job left the queue (scancel exits 0 for unknown ids)."""
        sid = handle.get("slurm_job_id")
        if not sid:
            return
        if handle.get("placement") == "invocation":
            if not await self._stop_alloc_task(ctx, handle, timeout):
                return  # other tasks of the invocation keep the allocation
        deadline = anyio.current_time() + timeout
        await self.conn.run(["scancel", str(sid)], timeout=timeout)
        while anyio.current_time() < deadline:
            r = await self.conn.run(["squeue", "-h", "-j", str(sid), "-o", "%T"], timeout=timeout)
            st = r.stdout.strip()
            if (r.rc != 0 and "Invalid job id" in r.stderr) or (r.rc == 0 and st in ("", "CANCELLED")):
                self.poller.wake()
                return
            await anyio.sleep(0.2)
        self.poller.wake()
        raise JobFailed(f"Slurm job {sid} still in the queue {timeout:.0f}s after scancel", failure_kind="infrastructure")

    # ------------------------------------------------------------------ placement: invocation
    async def _ensure_alloc(self, job: JobSpec) -> str:
        """The live allocation of the job's invocation, submitting a new one when needed."""
        a = alloc_dir(job)
        async with self._alloc_lock:
            sid = self._allocs.get(a)
            if sid is not None:
                info = self.poller.info.get(sid)
                alive = info is None or category(info.state) in ("queued", "running")
                if alive and await self.conn.read(f"{a}/closed") is None:
                    return sid
            apaths = Paths(a)
            try:
                await self.conn.remove(f"{a}/closed")  # left by the previous allocation's worker
                await self.conn.mkdir(f"{a}/queue")
                await self.conn.mkdir(apaths.logs)
                await self.conn.write(apaths.script, worker_script(job, self.alloc_linger).encode(), 0o700)
            except ConnError as e:
                raise JobFailed(f"cannot write the allocation script: {e}", failure_kind="infrastructure") from None
            sid = await self._submit(job, apaths)
            self._allocs[a] = sid
            return sid

    async def _queue_task(self, job: JobSpec) -> None:
        a = alloc_dir(job)
        try:
            await self.conn.write(f"{a}/queue/{int(job.index)}.sh", task_script(job).encode(), 0o700)
        except ConnError as e:
            raise JobFailed(f"cannot write the task script: {e}", failure_kind="infrastructure") from None

    async def _launch_alloc(self, ctx: JobContext) -> dict[str, Any]:
        job = ctx.job
        paths = Paths(remote_task_dir(job))
        try:
            task_script(job)
            worker_script(job)
        except ScriptError as e:
            raise JobFailed(str(e), failure_kind="evaluation") from None
        try:
            await self.conn.mkdir(paths.logs)
            await self.conn.mkdir(f"{alloc_dir(job)}/queue")
        except ConnError as e:
            raise JobFailed(f"cannot create the task dir: {e}", failure_kind="infrastructure") from None
        await self._queue_task(job)
        sid = await self._ensure_alloc(job)
        handle: dict[str, Any] = {
            **alloc_handle(job),
            "task_dir": paths.task_dir,
            "slurm_job_id": sid,
            "slurm_job_ids": [sid],
            "resubmits": 0,
            "offsets": {},
            "submitted_at": time.time(),
        }
        await ctx.save_handle(handle)
        await ctx.log([f"queued in the invocation's Slurm allocation {sid} ({alloc_dir(job)})"], "agent")
        await ctx.status("deploying", message=f"Slurm allocation {sid}")
        return handle

    async def _watch_alloc(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        job_id = ctx.job.job_id
        a, n = handle["alloc_dir"], int(handle["task_index"])
        self._allocs.setdefault(a, str(handle["slurm_job_id"]))
        free_requeues = 0
        signal_polls = 0
        while True:
            sid = str(handle["slurm_job_id"])
            self.poller.add(sid)
            self._alloc_users.setdefault(sid, set()).add(job_id)
            try:
                await self.poller.wait_next()
                await self._safe_pump(ctx, handle)
                if job_id in self._cancelled:
                    return Outcome(state="killed", message="withdrawn from the allocation before it started")
                rc = await self._exit_code(handle, sid)
                if rc is not None and (0 <= rc <= 128 or ctx.cancelled.is_set()):
                    await self._safe_pump(ctx, handle, final=True)
                    return await self._outcome(ctx, handle, sid, "COMPLETED" if rc == 0 else "FAILED", rc)
                if time.monotonic() - self.poller.last_ok > self.max_outage:
                    return Outcome(state="failed", message=f"cluster unreachable: {self.poller.last_error}",
                                   failure_kind="infrastructure")  # fmt: skip
                info = self.poller.info.get(sid)
                cat = category(info.state) if info is not None else None
                if rc is not None:
                    # the task was killed by a signal: a dying allocation (node failure, time-out,
                    # preemption) means requeue; otherwise it is the task's own failure
                    signal_polls += 1
                    if cat in ("queued", "running", None) and signal_polls < 20:
                        continue
                    if cat != "resubmit":
                        await self._safe_pump(ctx, handle, final=True)
                        return await self._outcome(ctx, handle, sid, "FAILED", rc)
                if ctx.job.deployment is not None and not handle.get("deployment_ready_for") == sid:
                    failed = await self._deployment_check(ctx, handle, sid)
                    if failed is not None:
                        return failed
                if info is None or cat is None or cat == "queued":
                    continue
                if cat == "running":
                    if handle.get("running_for") != sid and await self.conn.read(f"{a}/claimed/{n}.pid") is not None:
                        handle["running_for"] = sid
                        await ctx.save_handle(handle)
                        await ctx.status("running", message=f"running in Slurm allocation {sid}")
                    continue
                # the allocation ended without our task's (normal) exit code
                if rc is None:
                    await anyio.sleep(0.5)
                    if await self._exit_code(handle, sid) is not None:
                        continue
                if ctx.cancelled.is_set() or cat == "cancelled":
                    return await self._outcome(ctx, handle, sid, info.state, None)
                limit = ctx.job.execution.max_resubmits if isinstance(ctx.job.execution, SlurmExecution) else 0
                resubmits = int(handle.get("resubmits", 0))
                if cat == "resubmit":
                    if resubmits >= limit:
                        return Outcome(state="failed", failure_kind="infrastructure",
                                       message=f"Slurm allocation {sid} ended {info.state}; gave up after {resubmits} resubmit(s)")  # fmt: skip
                    handle["resubmits"] = resubmits + 1
                elif cat == "succeeded" and free_requeues < 3:
                    free_requeues += 1  # the worker closed just as our task arrived
                else:
                    return Outcome(state="failed", failure_kind="infrastructure",
                                   message=f"Slurm allocation {sid} ended {info.state} before the task finished")  # fmt: skip
                await self._queue_task(ctx.job)
                new = await self._ensure_alloc(ctx.job)
                handle["slurm_job_id"] = new
                if new not in handle.setdefault("slurm_job_ids", []):
                    handle["slurm_job_ids"].append(new)
                await ctx.save_handle(handle)
                signal_polls = 0
                await ctx.log([f"Slurm allocation {sid} ended {info.state}; task queued in allocation {new}"], "agent")
                await ctx.status("deploying", message=f"{info.state}: moved to Slurm allocation {new}")
            finally:
                self.poller.remove(sid)
                users = self._alloc_users.get(sid)
                if users is not None:
                    users.discard(job_id)

    async def _deployment_check(self, ctx: JobContext, handle: dict[str, Any], sid: str) -> Outcome | None:
        """Emit the allocation's deployment state once it is known; an Outcome if it failed."""
        a = handle["alloc_dir"]
        group = ctx.job.deployment_group or ctx.job.invocation_id
        if await self.conn.read(f"{a}/deployment.ready", 0, 16) is not None:
            handle["deployment_ready_for"] = sid
            await ctx.save_handle(handle)
            dep = ctx.job.deployment
            port = int(getattr(dep, "port", 8000))
            await ctx.deployment(group, "ready", url=f"http://127.0.0.1:{port}/v1 (inside Slurm allocation {sid})")
            return None
        if await self.conn.read(f"{a}/deployment.failed", 0, 16) is not None:
            data = await self.conn.read(f"{a}/deployment.log", 0, 1 << 20) or b""
            tail = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()][-20:]
            await ctx.deployment(group, "failed", message="not healthy in time", last_logs=tail)
            return Outcome(
                state="failed",
                message="the model deployment in Slurm allocation " + sid + " did not become healthy"
                + (f": {tail[-1]}" if tail else ""),
                failure_kind="infrastructure",
            )
        return None

    async def _stop_alloc_task(self, ctx: JobContext, handle: dict[str, Any], timeout: float) -> bool:
        """Withdraw or kill one task of an allocation; True when the allocation itself should go."""
        a, n, sid = handle["alloc_dir"], int(handle["task_index"]), str(handle["slurm_job_id"])
        self._stopping.add(ctx.job.job_id)
        if await self.conn.remove(f"{a}/queue/{n}.sh"):
            self._cancelled.add(ctx.job.job_id)
        else:
            await self.conn.write(f"{a}/cancel/{n}", b"")
            with anyio.move_on_after(timeout):
                while await self._exit_code(handle, sid) is None:
                    await anyio.sleep(0.3)
        self.poller.wake()
        others = self._alloc_users.get(sid, set()) - self._stopping - {ctx.job.job_id}
        return not others

    async def teardown(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        """Nothing to remove: the job's files stay in its task dir on the cluster."""

    async def aclose(self) -> None:
        await self.conn.aclose()
