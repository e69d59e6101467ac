"""The local PROCESS runtime: runs ``nv-eval-harness run ...`` as a detached subprocess.

For users without Docker. The job survives an agent restart: its handle (pid, pgid, start
time, log offsets) is persisted, ``watch`` tails ``<task_dir>/logs/stdout.log|stderr.log``
from the saved offsets and learns the exit code from ``<task_dir>/logs/exit_code`` written
by the wrapper. A ``llamacpp`` deployment is served by ``llama_cpp.server``, one per
deployment group (see ``_llamacpp``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
from nv_eval.protocol import JobSpec, LlamaCppDeployment, LocalExecution, NoDeployment, Results

from .._executor import AgentEnv
from .._harness import default_harness_command, endpoint_url_for, harness_run_args, progress_of
from .._runtime import JobContext, JobFailed, Outcome, Runtime, emit_result_once
from ._llamacpp import LlamaCppDeployments, group_of, server_command
from ._procutil import LogTail, group_members, is_alive, kill_group, proc_start_time, read_exit_code, spawn_detached


def _logs(task_dir: str) -> Path:
    return Path(task_dir) / "logs"


def _abs(path: str) -> str:
    return os.path.abspath(path)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _last_stderr_line(task_dir: str) -> str | None:
    p = _logs(task_dir) / "stderr.log"
    try:
        with p.open("rb") as f:
            f.seek(max(0, _size(p) - 8192))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


class ProcessRuntime(Runtime):
    """Runs the harness as a local subprocess (``execution.runtime: process``)."""

    name = "process"
    capabilities = ("process",)

    def __init__(
        self,
        env: AgentEnv | None = None,
        *,
        harness_cmd: Sequence[str] | None = None,
        poll_interval: float = 0.2,
        linger_s: float = 30.0,
    ) -> None:
        self.env = env
        self.harness_cmd = list(harness_cmd) if harness_cmd else None
        self.poll_interval = poll_interval
        self.deployments = LlamaCppDeployments(env, linger_s=linger_s)

    # ------------------------------------------------------------------ dry-run
    def command_for(self, job: JobSpec, endpoint_url: str | None = None) -> list[str]:
        url = endpoint_url or job.endpoint.url or ""
        dep = job.deployment
        if isinstance(dep, LlamaCppDeployment):
            url = endpoint_url_for(f"http://127.0.0.1:{dep.port}/v1", job.endpoint.type)
        cmd = self.harness_cmd or default_harness_command()
        return cmd + harness_run_args(job, endpoint_url=url, output_dir=_abs(job.task_dir))

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        import shlex

        out: list[str] = []
        seen: set[str] = set()
        for job in jobs:
            dep = job.deployment
            if isinstance(dep, LlamaCppDeployment) and group_of(job) not in seen:
                seen.add(group_of(job))
                out.append(f"# deployment {group_of(job)} (shared by {len(job.group_jobs) or 1} job(s))")
                out.append(shlex.join(server_command(job, dep)))
            elif dep is not None and not isinstance(dep, (NoDeployment, LlamaCppDeployment)):
                out.append(f"# {job.job_id}: deployment type {dep_type(dep)} needs the docker runtime")
            out.append(f"# job {job.job_id} ({job.task.name}) -> {job.task_dir}/logs/")
            out.append(shlex.join(self.command_for(job)))
        return "\n".join(out)

    # ------------------------------------------------------------------ launch
    async def launch(self, ctx: JobContext) -> dict[str, Any]:
        job = ctx.job
        dep = job.deployment
        url = job.endpoint.url
        task_dir = _abs(job.task_dir)  # the job runs with cwd=task_dir: no relative paths
        handle: dict[str, Any] = {"task_dir": task_dir}
        if dep is not None and not isinstance(dep, NoDeployment):
            if not isinstance(dep, LlamaCppDeployment):
                raise JobFailed(
                    f"deployment type {dep_type(dep)} needs the docker runtime (set execution.runtime=docker)"
                )
            handle["deployment_group"] = group_of(job)
            await ctx.save_handle(handle)  # so teardown releases our share even if the launch fails
            base = await self.deployments.acquire(ctx, dep)
            url = endpoint_url_for(base, job.endpoint.type)
        if not url:
            raise JobFailed("the job has no endpoint URL (set target.api_endpoint.url or a deployment)")
        logs = _logs(task_dir)
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / "stdout.log", logs / "stderr.log"
        cmd = self.command_for(job, url)
        env = dict(os.environ)
        if isinstance(job.execution, LocalExecution):
            env.update(job.execution.env)
        handle.update(stdout_offset=_size(out), stderr_offset=_size(err), endpoint_url=url)
        try:
            ids = spawn_detached(cmd, stdout=out, stderr=err, exit_code_file=logs / "exit_code", env=env, cwd=task_dir)
        except OSError as e:
            raise JobFailed(f"cannot start the harness ({cmd[0]}): {e}", failure_kind="infrastructure") from None
        handle.update(ids)
        await ctx.save_handle(handle)
        await ctx.status("running")
        return handle

    # ------------------------------------------------------------------ watch
    async def watch(self, ctx: JobContext, handle: dict[str, Any]) -> Outcome:
        logs = _logs(handle["task_dir"])
        out = LogTail(logs / "stdout.log", int(handle.get("stdout_offset", 0)))
        err = LogTail(logs / "stderr.log", int(handle.get("stderr_offset", 0)))
        rcf = logs / "exit_code"
        pid, start = int(handle["pid"]), handle.get("start_time")
        group = handle.get("deployment_group")
        dep_rec = self.deployments.record(group) if group else None
        dead: str | None = None
        polls = 0
        while True:
            exited = read_exit_code(rcf) is not None or not is_alive(pid, start)
            if not exited and dep_rec is not None and polls % 5 == 0:  # the shared server, about once a second
                dead = self.deployments.death_message(str(group), dep_rec)
                if dead is not None:  # no point waiting for the harness's retries against a dead server
                    await self.stop(ctx, handle)
                    exited = True
            await self._pump(ctx, handle, out, err, final=exited)
            if exited:
                break
            polls += 1
            await anyio.sleep(self.poll_interval)
        handle.update(stdout_offset=out.offset, stderr_offset=err.offset)
        await ctx.save_handle(handle)
        rc = read_exit_code(rcf)
        for _ in range(10):  # the wrapper may be writing it right now
            if rc is not None:
                break
            await anyio.sleep(0.05)
            rc = read_exit_code(rcf)
        return await self._outcome(ctx, handle, rc, dead)

    async def _pump(self, ctx: JobContext, handle: dict[str, Any], out: LogTail, err: LogTail, *, final: bool) -> None:
        """Emit new output. Each event is preceded by staging the log offsets just past its lines,
        so they are persisted together with the event's seq: a re-attach never repeats a line.
        Consecutive progress lines of one poll are coalesced into the last one."""
        plain: list[str] = []
        plain_end = 0
        prog: dict[str, Any] | None = None
        prog_end = 0

        async def flush_plain() -> None:
            if plain:
                handle["stdout_offset"] = plain_end
                ctx.stage_handle(handle)
                await ctx.log(list(plain), "stdout")
                plain.clear()

        async def flush_prog() -> None:
            nonlocal prog
            if prog is not None:
                handle["stdout_offset"] = prog_end
                ctx.stage_handle(handle)
                await ctx.progress(
                    int(prog.get("done", 0)), int(prog.get("total", 0)), prog.get("rps"), prog.get("eta_s")
                )
                prog = None

        for line, end in out.read(final=final):
            parsed = progress_of(line)
            if parsed is None:
                await flush_prog()
                plain.append(line)
                plain_end = end
                continue
            await flush_plain()
            if parsed.get("event") == "progress":
                prog, prog_end = parsed, end
            elif prog is not None:
                prog_end = end  # the final "done" line: persisted with the pending progress event
            else:
                handle["stdout_offset"] = end
                ctx.stage_handle(handle)
        await flush_plain()
        await flush_prog()
        lines = err.read(final=final)
        if lines:
            handle["stderr_offset"] = lines[-1][1]
            ctx.stage_handle(handle)
            await ctx.log([ln for ln, _ in lines], "stderr")

    async def _outcome(
        self, ctx: JobContext, handle: dict[str, Any], rc: int | None, dead: str | None = None
    ) -> Outcome:
        if ctx.cancelled.is_set():
            return Outcome(state="killed", exit_code=rc)
        task_dir = handle["task_dir"]
        group = handle.get("deployment_group")
        if rc != 0 and group:  # a failure of a job whose server died is the server's death, said plainly
            rec = self.deployments.record(str(group))
            if rec is not None:
                dead = dead or self.deployments.death_message(str(group), rec)
                if dead is not None:
                    await self.deployments.report_death(ctx, str(group), rec, dead)
                    return Outcome(state="failed", message=dead, failure_kind="infrastructure", exit_code=rc)
        if rc is None:
            return Outcome(
                state="failed",
                message="the harness process disappeared without an exit code (killed from outside?)",
                failure_kind="infrastructure",
            )
        if rc == 0:
            path = Path(task_dir) / "results.json"
            try:
                results = msgspec.json.decode(path.read_bytes(), type=Results)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                return Outcome(
                    state="failed",
                    message=f"the harness exited 0 but {path} is missing or invalid: {e}",
                    failure_kind="evaluation",
                    exit_code=rc,
                )
            return await emit_result_once(ctx, handle, results)
        last = _last_stderr_line(task_dir)
        if rc in (2, 3):
            return Outcome(state="failed", message=last or f"harness exit code {rc}", failure_kind="evaluation", exit_code=rc)
        if rc in (137, 143) or rc > 128:
            return Outcome(
                state="failed",
                message=f"the harness was terminated by signal {rc - 128}" + (f": {last}" if last else ""),
                failure_kind="infrastructure",
                exit_code=rc,
            )
        return Outcome(state="failed", message=last or f"harness exit code {rc}", failure_kind="evaluation", exit_code=rc)

    # ------------------------------------------------------------------ stop / teardown
    async def stop(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        if "pgid" not in handle:
            return
        pid, pgid = int(handle["pid"]), int(handle["pgid"])
        st = proc_start_time(pid)
        if st is not None and handle.get("start_time") not in (None, st):
            return  # the pid was reused by another process: ours is long gone
        if not await kill_group(pgid, grace=3.0, timeout=5.0):
            ctx_log = getattr(ctx, "logger", None)
            if ctx_log is not None:
                ctx_log.warning("process group still alive after SIGKILL", pgid=pgid)

    async def teardown(self, ctx: JobContext, handle: dict[str, Any]) -> None:
        if "pgid" in handle and group_members(int(handle["pgid"])):
            await self.stop(ctx, handle)
        group = handle.get("deployment_group")
        if group:
            await self.deployments.release(ctx, group, ctx.job.job_id)

    async def recover(self, live_jobs: dict[str, dict[str, Any]]) -> None:
        await self.deployments.recover(live_jobs)


def dep_type(dep: Any) -> str:
    return str(msgspec.inspect.type_info(type(dep)).tag)  # type: ignore[attr-defined]
