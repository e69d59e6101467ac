"""``placement: invocation``: ONE Slurm allocation per invocation runs all of its tasks.

The allocation runs a small worker script in ``<invocation dir>/.slurm-alloc/``. The agent
drops each task's script into ``queue/<index>.sh`` as it takes the job (jobs of an
invocation arrive one by one); the worker claims scripts with an atomic ``mv`` into
``claimed/`` and runs them one at a time (``task_concurrency: sequential``) or all at once
(``parallel``), kills a task whose ``cancel/<index>`` marker appears, and exits after
``linger`` idle seconds (writing ``closed`` first, then looking at the queue once more, so
a task dropped at that moment is either run or seen by the agent, which then submits a new
allocation). Each task writes ``logs/exit_code.<allocation id>`` like a per-task job.
"""

from __future__ import annotations

import shlex
from typing import Any

from nv_eval.protocol import JobSpec, LlamaCppDeployment, NoDeployment, SlurmExecution

from ._script import Paths, ScriptError, job_name, remote_task_dir, sbatch_directives, secret_names, task_body

DEPLOY_LOG = "deployment.log"


def deployment_lines(job: JobSpec) -> list[str]:
    """Start the job's model deployment once in the allocation and wait (bounded) for health.

    Writes ``deployment.ready`` (or ``deployment.failed`` and exits 3). Container runtimes
    run the deployment image (pyxis: ``srun --container-image``, apptainer, docker); runtime
    ``none`` supports ``llamacpp`` (the venv's ``llama_cpp.server`` on the node).
    """
    dep = job.deployment
    if dep is None or isinstance(dep, NoDeployment):
        return []
    ex = job.execution
    assert isinstance(ex, SlurmExecution)
    if ex.container_runtime == "none":
        if not isinstance(dep, LlamaCppDeployment):
            raise ScriptError(
                "execution.container_runtime: none can only start a llamacpp deployment; use pyxis, apptainer or docker"
            )
        from ..local._llamacpp import server_command

        argv = server_command(job, dep)
        # the python of the node's venv: next to the harness command when it is a path, else python3
        first = shlex.split(ex.harness_command)[0] if ex.harness_command.strip() else ""
        argv[0] = first.rsplit("/", 1)[0] + "/python" if first.startswith("/") else "python3"
        port, health, timeout = dep.port, dep.health_path, dep.readiness_timeout
        names: list[str] = list(dep.env_names)
        env = dict(dep.env)
    else:
        from ..deploy import deployment_spec

        try:
            spec = deployment_spec(job)
        except ValueError as e:
            raise ScriptError(str(e)) from None
        assert spec is not None
        port, health, timeout = spec.port, spec.health_path, spec.readiness_timeout
        names, env = list(spec.env_names), dict(spec.env)
        mounts = ",".join(b for b in spec.binds)
        cmd = list(spec.command or [])
        if ex.container_runtime == "pyxis":
            argv = ["srun", "--ntasks=1", "--overlap", f"--container-image={spec.image}", "--no-container-mount-home"]
            if mounts:
                argv.append(f"--container-mounts={mounts}")
            if not cmd or cmd[0].startswith("-"):
                argv.append("--container-entrypoint")
            argv += cmd
        elif ex.container_runtime == "apptainer":
            binds: list[str] = []
            for b in spec.binds:
                binds += ["--bind", b]
            gpu = ["--nv"] if ex.gpus_per_node else []
            verb = "run" if not cmd or cmd[0].startswith("-") else "exec"
            argv = ["srun", "--ntasks=1", "--overlap", "apptainer", verb, *gpu, *binds, spec.image, *cmd]
        else:  # docker
            vols: list[str] = []
            for b in spec.binds:
                vols += ["-v", b]
            envs: list[str] = []
            for n in [*names, *env]:
                envs += ["-e", n]
            gpu = ["--gpus", "all"] if ex.gpus_per_node else []
            argv = ["docker", "run", "--rm", "--name", "nveval-dep-${SLURM_JOB_ID}", "--network", "host", *gpu,
                    *vols, *envs, spec.image, *cmd]  # fmt: skip
    from ._script import _quote_argv, check_env_name

    lines = ["# model deployment, started once for every task of the allocation"]
    for k, v in env.items():
        check_env_name("deployment.env", k)
        lines.append(f"export {k}={shlex.quote(v)}")
    for n in names:
        check_env_name("deployment.env_names", n)
        lines.append(f': "${{{n}:?secret env var {n} is not set in the job environment}}"')
    quoted = _quote_argv(argv).replace('"nveval-${SLURM_JOB_ID}"', '"nveval-dep-${SLURM_JOB_ID}"')
    url = shlex.quote(f"http://127.0.0.1:{int(port)}{health}")
    lines += [
        f"{quoted} >>{DEPLOY_LOG} 2>&1 &",
        "dep_pid=$!",
        "trap 'kill -TERM \"$dep_pid\" 2>/dev/null' EXIT",
        f"deadline=$((SECONDS + {int(timeout)}))",
        f"until curl -sf -o /dev/null {url}; do",
        '  if ! kill -0 "$dep_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then',
        "    touch deployment.failed; tail -n 20 " + DEPLOY_LOG + " >&2; exit 3",
        "  fi",
        "  sleep 2",
        "done",
        "touch deployment.ready",
    ]
    return lines


def alloc_dir(job: JobSpec) -> str:
    task_dir = remote_task_dir(job).rstrip("/")
    return task_dir.rsplit("/", 1)[0] + "/.slurm-alloc"


def task_script(job: JobSpec) -> str:
    return "#!/bin/bash\n" + "\n".join(task_body(job, Paths(remote_task_dir(job)))) + "\n"


def worker_script(job: JobSpec, linger: int = 30) -> str:
    ex = job.execution
    assert isinstance(ex, SlurmExecution)
    a = alloc_dir(job)
    name = job_name(job).rsplit("-", 2)[0] + "-alloc"
    par = 1 if ex.task_concurrency == "parallel" else 0
    lines = ["#!/bin/bash", *sbatch_directives(ex, name=name, secret_names=secret_names(job))]
    lines += [
        f"# nv-eval allocation of invocation {shlex.quote(job.invocation_id)}",
        "set -u",
        f"cd {shlex.quote(a)} || exit 1",
        "mkdir -p queue claimed cancel",
        "rm -f closed deployment.ready deployment.failed",
        "stop_all() { for p in claimed/*.pid; do [ -e \"$p\" ] && kill -TERM -- \"-$(cat \"$p\")\" 2>/dev/null; done; "
        "[ -n \"${dep_pid:-}\" ] && kill -TERM \"$dep_pid\" 2>/dev/null; wait; exit 143; }",
        "trap stop_all TERM INT",
        *deployment_lines(job),
        f"PAR={par}",
        f"LINGER={int(linger)}",
        "idle=0",
        "running() { jobs -pr | grep -cvx \"${dep_pid:-none}\"; }",  # tasks only, not the deployment
        "queued() { cd queue && ls -- *.sh 2>/dev/null; }",
        "while :; do",
        "  for c in cancel/*; do [ -e \"$c\" ] || break; n=${c#cancel/}; "
        "[ -e \"claimed/$n.pid\" ] && kill -TERM -- \"-$(cat \"claimed/$n.pid\")\" 2>/dev/null; rm -f \"$c\"; done",
        "  for f in $(cd queue && ls -- *.sh 2>/dev/null | sort -n); do",
        "    [ \"$PAR\" = 1 ] || [ \"$(running)\" -eq 0 ] || break",
        "    n=${f%.sh}",
        "    mv \"queue/$f\" \"claimed/$f\" 2>/dev/null || continue",
        "    setsid bash \"claimed/$f\" </dev/null & echo $! >\"claimed/$n.pid\"",
        "  done",
        "  if [ \"$(running)\" -eq 0 ] && [ -z \"$(queued)\" ]; then idle=$((idle + 1)); else idle=0; fi",
        "  if [ \"$idle\" -ge \"$LINGER\" ]; then",
        "    touch closed",
        "    [ -z \"$(queued)\" ] && exit 0",
        "    rm -f closed; idle=0",
        "  fi",
        "  sleep 1 & wait $!",
        "done",
    ]
    return "\n".join(lines) + "\n"


def alloc_handle(job: JobSpec) -> dict[str, Any]:
    return {"placement": "invocation", "alloc_dir": alloc_dir(job), "task_index": int(job.index)}
