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

from nv_eval.protocol import JobSpec, SlurmExecution

from ._script import Paths, job_name, remote_task_dir, sbatch_directives, secret_names, task_body


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
        "rm -f closed",
        f"PAR={par}",
        f"LINGER={int(linger)}",
        "idle=0",
        "stop_all() { for p in claimed/*.pid; do [ -e \"$p\" ] && kill -TERM -- \"-$(cat \"$p\")\" 2>/dev/null; done; wait; exit 143; }",
        "trap stop_all TERM INT",
        "running() { jobs -pr | wc -l; }",
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
