"""External harness containers: NeMo Evaluator and lm-evaluation-harness.

:func:`external_command` builds the container command for a registry task whose
``harness`` is ``nemo-evaluator`` or ``lm-eval``; :func:`parse_external_results` turns the
files such a container wrote into our normalized :class:`~nv_eval.protocol.Results`.
"""

from __future__ import annotations

from pathlib import Path

from nv_eval.protocol import JobSpec, Results

from .lm_eval import lm_eval_command, parse_lm_eval
from .nemo_evaluator import nemo_evaluator_command, parse_nemo_evaluator


def external_command(job: JobSpec, *, endpoint_url: str, output_dir: str) -> list[str]:
    if job.task.harness == "lm-eval":
        return lm_eval_command(job, endpoint_url=endpoint_url, output_dir=output_dir)
    if job.task.harness == "nemo-evaluator":
        return nemo_evaluator_command(job, endpoint_url=endpoint_url, output_dir=output_dir)
    raise ValueError(f"task {job.task.name}: unknown harness {job.task.harness!r}")


def parse_external_results(job: JobSpec, output_dir: Path) -> Results:
    if job.task.harness == "lm-eval":
        return parse_lm_eval(job, output_dir)
    if job.task.harness == "nemo-evaluator":
        return parse_nemo_evaluator(job, output_dir)
    raise ValueError(f"task {job.task.name}: unknown harness {job.task.harness!r}")


__all__ = ["external_command", "parse_external_results"]
