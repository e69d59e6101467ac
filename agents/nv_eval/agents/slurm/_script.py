"""sbatch script generation for the Slurm executor, injection-safe.

Every value that reaches the shell body is quoted with :func:`shlex.quote`; every
``#SBATCH`` value is validated (single line, no whitespace, quotes, backslashes or ``$``)
because sbatch parses those lines itself. Secrets appear only as environment variable
NAMES: exported to the job with ``--export=ALL,NAME,...`` and checked with
``${NAME:?...}`` (which prints the name, never the value). ``env_setup`` lines are the
user's own shell (``module load ...``) and are written verbatim, one line each.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from nv_eval.protocol import JobSpec, NoDeployment, SlurmExecution

from .._harness import endpoint_url_for, harness_run_args

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SBATCH_VALUE = re.compile(r"^[A-Za-z0-9_.,:+=@/%&|()\[\]*!^~-]+$")
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$|^\d+$|^(UNLIMITED|INFINITE)$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_FLAG = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*(=[^\s'\"\\`$;<>]*)?$")
# flags the executor sets itself; a user overriding them would break watching or the layout
_RESERVED_FLAGS = ("--output", "--error", "--wrap", "--parsable", "--job-name", "--export", "--requeue", "-o", "-e", "-J")


class ScriptError(ValueError):
    """The execution config cannot be turned into a safe sbatch script (one-line message)."""


def _check_value(field: str, value: str) -> str:
    if not _SBATCH_VALUE.match(value):
        raise ScriptError(
            f"execution.{field}: {value!r} is not a valid sbatch value (one word of letters, digits and _.,:+=@/%&|()[]*!^~-)"
        )
    return value


def check_env_name(field: str, name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ScriptError(f"{field}: {name!r} is not a valid environment variable name")
    return name


def _single_line(field: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ScriptError(f"{field}: {value!r} must be a single line")
    return value


def job_name(job: JobSpec) -> str:
    """A Slurm job name made only of safe characters (the task name is sanitized)."""
    task = re.sub(r"[^A-Za-z0-9._-]", "_", job.task.name)[:40]
    return f"nveval-{job.invocation_id[:12]}-{job.index}-{task}"


def sbatch_directives(ex: SlurmExecution, *, name: str, secret_names: Sequence[str]) -> list[str]:
    """The ``#SBATCH`` lines (validated) for one job. ``--output`` goes on the command line
    (:func:`sbatch_argv`) because a path may hold any character."""
    d = [f"--job-name={_check_value('job name', name)}"]
    if ex.partition:
        d.append(f"--partition={_check_value('partition', ex.partition)}")
    d.append(f"--nodes={int(ex.nodes)}")
    d.append("--ntasks-per-node=1")
    if ex.gpus_per_node:
        d.append(f"--gpus-per-node={int(ex.gpus_per_node)}")
    if ex.time_limit:
        if not _TIME.match(ex.time_limit):
            raise ScriptError(f"execution.time_limit: {ex.time_limit!r} is not a Slurm time (e.g. 04:00:00 or 1-00:00:00)")
        d.append(f"--time={ex.time_limit}")
    if ex.account:
        d.append(f"--account={_check_value('account', ex.account)}")
    if ex.qos:
        d.append(f"--qos={_check_value('qos', ex.qos)}")
    if ex.constraint:
        d.append(f"--constraint={_check_value('constraint', ex.constraint)}")
    if ex.exclusive:
        d.append("--exclusive")
    if ex.cpus_per_task:
        d.append(f"--cpus-per-task={int(ex.cpus_per_task)}")
    if ex.mem:
        if not _MEM.match(ex.mem):
            raise ScriptError(f"execution.mem: {ex.mem!r} is not a Slurm memory size (e.g. 32G)")
        d.append(f"--mem={ex.mem}")
    names = [check_env_name("execution.env_names", n) for n in secret_names]
    d.append("--export=" + ",".join(["ALL", *names]))
    d.append("--no-requeue")  # the agent resubmits by policy (counted), Slurm does not requeue silently
    for i, flag in enumerate(ex.sbatch_extra_flags):
        _single_line(f"execution.sbatch_extra_flags[{i}]", flag)
        if not _FLAG.match(flag):
            raise ScriptError(
                f"execution.sbatch_extra_flags[{i}]: {flag!r} is not a single sbatch flag like --gres=gpu:8 "
                "(no spaces, quotes, $, backslashes or ;<>)"
            )
        key = flag.split("=", 1)[0]
        if key in _RESERVED_FLAGS:
            raise ScriptError(f"execution.sbatch_extra_flags[{i}]: {key} is set by the executor and cannot be overridden")
        d.append(flag)
    return [f"#SBATCH {x}" for x in d]


def secret_names(job: JobSpec) -> list[str]:
    ex = job.execution
    names: list[str] = list(ex.env_names) if isinstance(ex, SlurmExecution) else []
    if job.endpoint.api_key_name and job.endpoint.api_key_name not in names:
        names.append(job.endpoint.api_key_name)
    return [check_env_name("execution.env_names", n) for n in names]


@dataclass(frozen=True)
class Paths:
    """Where one job's files live on the cluster."""

    task_dir: str

    @property
    def logs(self) -> str:
        return f"{self.task_dir}/logs"

    @property
    def script(self) -> str:
        return f"{self.task_dir}/logs/job.sbatch"

    @property
    def stdout(self) -> str:
        return f"{self.task_dir}/logs/stdout.log"

    @property
    def stderr(self) -> str:
        return f"{self.task_dir}/logs/stderr.log"

    @property
    def slurm_out(self) -> str:
        return f"{self.task_dir}/logs/slurm-%j.out"

    def slurm_out_for(self, slurm_id: str) -> str:
        return f"{self.task_dir}/logs/slurm-{slurm_id}.out"

    def exit_code_for(self, slurm_id: str) -> str:
        return f"{self.task_dir}/logs/exit_code.{slurm_id}"

    @property
    def results(self) -> str:
        return f"{self.task_dir}/results.json"

    @property
    def progress(self) -> str:
        return f"{self.task_dir}/progress.jsonl"


def remote_task_dir(job: JobSpec) -> str:
    """The task dir on the cluster: under ``remote_work_dir`` when set, else the job's own path."""
    ex = job.execution
    if isinstance(ex, SlurmExecution) and ex.remote_work_dir:
        base = job.task_dir.rstrip("/").rsplit("/", 1)[-1]
        return f"{ex.remote_work_dir.rstrip('/')}/{job.invocation_id}/{base}"
    return job.task_dir


def harness_argv(job: JobSpec, paths: Paths) -> list[str]:
    """The harness command (argv) the job runs, per container runtime."""
    ex = job.execution
    assert isinstance(ex, SlurmExecution)
    url = endpoint_url_for(job.endpoint.url or "", job.endpoint.type) if job.endpoint.url else ""
    dep = job.deployment
    if not url and dep is not None and ex.placement == "invocation" and not isinstance(dep, NoDeployment):
        url = endpoint_url_for(f"http://127.0.0.1:{int(dep.port)}/v1", job.endpoint.type)  # started by the allocation
    if not url:
        raise ScriptError("the job has no endpoint URL: set target.api_endpoint.url, or use placement=invocation "
                          "to start the deployment inside the allocation")
    args = harness_run_args(job, endpoint_url=url, output_dir=paths.task_dir)
    image = ex.container_image or job.task.image
    mounts = f"{paths.task_dir}:{paths.task_dir}"
    if ex.container_runtime == "none":
        return [*shlex.split(ex.harness_command), *args]
    if ex.container_runtime == "pyxis":
        return ["srun", "--ntasks=1", f"--container-image={image}", f"--container-mounts={mounts}",
                "--no-container-mount-home", "nv-eval-harness", *args]  # fmt: skip
    if ex.container_runtime == "apptainer":
        gpu = ["--nv"] if ex.gpus_per_node else []
        return ["srun", "--ntasks=1", "apptainer", "exec", *gpu, "--bind", mounts, image, "nv-eval-harness", *args]
    if ex.container_runtime == "docker":
        envs: list[str] = []
        for n in secret_names(job):
            envs += ["-e", n]
        for k in ex.env:
            envs += ["-e", k]
        gpu = ["--gpus", "all"] if ex.gpus_per_node else []
        return ["docker", "run", "--rm", "--name", "nveval-${SLURM_JOB_ID}", "--network", "host", *gpu,
                "-v", mounts, *envs, image, "nv-eval-harness", *args]  # fmt: skip
    raise ScriptError(f"execution.container_runtime: unknown value {ex.container_runtime!r}")


def _quote_argv(argv: Sequence[str]) -> str:
    # the docker container name keeps ${SLURM_JOB_ID} expandable; everything else is inert
    out = []
    for a in argv:
        if a == "nveval-${SLURM_JOB_ID}":
            out.append('"nveval-${SLURM_JOB_ID}"')
        else:
            out.append(shlex.quote(a))
    return " ".join(out)


def render_script(job: JobSpec, task_dir: str | None = None) -> str:
    """The complete sbatch script for one job (per-task placement)."""
    ex = job.execution
    if not isinstance(ex, SlurmExecution):
        raise ScriptError(f"job {job.job_id} is not a slurm job (execution.type={type(ex).__name__})")
    paths = Paths(task_dir or remote_task_dir(job))
    lines = ["#!/bin/bash"]
    lines += sbatch_directives(ex, name=job_name(job), secret_names=secret_names(job))
    return "\n".join(lines + task_body(job, paths)) + "\n"


def task_body(job: JobSpec, paths: Paths) -> list[str]:
    """The shell lines that run one task (after the #SBATCH header, or as an allocation's task script)."""
    ex = job.execution
    assert isinstance(ex, SlurmExecution)
    _single_line("task dir", paths.task_dir)
    names = secret_names(job)
    lines = [
        f"# nv-eval job {shlex.quote(job.job_id)} attempt {int(job.attempt)}",
        "set -u",
        f"cd {shlex.quote(paths.task_dir)} || exit 1",
    ]
    for i, line in enumerate(ex.env_setup):
        lines.append(_single_line(f"execution.env_setup[{i}]", line))
    for k, v in ex.env.items():
        check_env_name("execution.env", k)
        lines.append(f"export {k}={shlex.quote(v)}")
    for n in names:
        lines.append(f': "${{{n}:?secret env var {n} is not set in the job environment}}"')
    argv = harness_argv(job, paths)
    if ex.container_runtime == "docker":
        lines.append("trap 'docker rm -f \"nveval-${SLURM_JOB_ID}\" >/dev/null 2>&1' EXIT")
    lines += [
        f"{_quote_argv(argv)} >>{shlex.quote(paths.stdout)} 2>>{shlex.quote(paths.stderr)} &",
        "child=$!",
        "trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT",
        'wait "$child"; rc=$?',
        # a trapped signal interrupts wait (rc > 128): wait again for the harness's own exit code
        'if [ "$rc" -gt 128 ]; then wait "$child"; r2=$?; if [ "$r2" -ge 0 ] && [ "$r2" -ne 127 ]; then rc=$r2; fi; fi',
        'if [ "$rc" -lt 0 ] || [ "$rc" -gt 255 ]; then rc=143; fi',
        f'printf "%s\\n" "$rc" >{shlex.quote(paths.logs)}/exit_code."${{SLURM_JOB_ID}}"',
        'exit "$rc"',
    ]
    return lines


def sbatch_argv(paths: Paths) -> list[str]:
    """The submit command (an argv: shlex-joined for a remote shell, never interpolated)."""
    return ["sbatch", "--parsable", f"--output={paths.slurm_out}", paths.script]


def check_script(text: str) -> None:
    """Assert the invariants every generated script must hold (used by tests and before submit)."""
    for ln in text.splitlines():
        if ln.startswith("#SBATCH ") and not re.match(r"^#SBATCH \S+$", ln):
            raise ScriptError(f"unsafe #SBATCH line: {ln!r}")
