"""Helpers shared by the external harness adapters: metric names, Results assembly."""

from __future__ import annotations

import time
from typing import Any

from nv_eval.protocol import JobSpec, Metric, Results


def as_float(x: Any) -> float | None:
    """A number from a harness file (``"N/A"``, None and non-numbers give None)."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(str(x))
    except (TypeError, ValueError):
        return None


def make_results(
    job: JobSpec,
    *,
    harness: str,
    version: str,
    metrics: dict[str, Metric],
    n_samples: int,
    subtasks: dict[str, dict[str, Metric]] | None = None,
    groups: dict[str, dict[str, Metric]] | None = None,
    endpoint_url: str = "",
    num_fewshot: int = 0,
    duration_s: float | None = None,
    notes: list[str] | None = None,
) -> Results:
    if not metrics:
        raise ValueError(f"{harness}: no metrics for task {job.task.harness_task or job.task.name} in its output")
    res = Results(
        task=job.task.name,
        metrics=metrics,
        n_samples=n_samples,
        mode="generative" if job.endpoint.type == "chat" else "loglikelihood",
        model_id=job.endpoint.model_id,
        endpoint_url=endpoint_url or (job.endpoint.url or ""),
        endpoint_type=job.endpoint.type,
        harness=harness,
        harness_version=version,
        num_fewshot=num_fewshot,
        subtasks=subtasks or {},
        groups=groups or {},
        config={"harness_task": job.task.harness_task or job.task.name},
        notes=notes or [],
    )
    if duration_s is not None:
        now = time.time()
        res.timings.duration_s = duration_s
        res.timings.finished_at = now
        res.timings.started_at = now - duration_s
    return res
