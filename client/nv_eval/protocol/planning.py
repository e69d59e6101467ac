"""Planning an invocation into job specs: a pure function shared by the daemon and dry-run."""

from __future__ import annotations

import os
import time

from .config import (
    NoDeployment,
    RunConfig,
    TaskParams,
    executor_name,
    infer_endpoint_type,
)
from .ids import job_id
from .jobs import EndpointSpec, JobSpec
from .tasks import TaskEntry


class PlanError(ValueError):
    """The configuration cannot be planned (one-line message naming the field)."""


def _model_id(cfg: RunConfig) -> str:
    mid = cfg.target.api_endpoint.model_id
    dep = cfg.deployment
    if not mid and not isinstance(dep, NoDeployment):
        mid = dep.served_model_name or getattr(dep, "model_id", None) or getattr(dep, "hf_model_handle", None)
        if not mid and getattr(dep, "model_path", None):
            mid = os.path.basename(str(dep.model_path).rstrip("/"))  # type: ignore[attr-defined]
    if not mid:
        raise PlanError("target.api_endpoint.model_id is required (the model name the endpoint serves)")
    return mid


def plan_invocation(
    invocation_id: str, cfg: RunConfig, entries: list[TaskEntry], now: float | None = None
) -> list[JobSpec]:
    """Turn a validated config (and the registry entry of each task, in order) into job specs."""
    tasks = cfg.evaluation.tasks
    if not tasks:
        raise PlanError("evaluation.tasks is empty: list at least one task (e.g. - name: arc_challenge)")
    if len(entries) != len(tasks):
        raise PlanError(f"expected {len(tasks)} registry entries, got {len(entries)}")
    now = time.time() if now is None else now
    ep = cfg.target.api_endpoint
    has_dep = not isinstance(cfg.deployment, NoDeployment)
    if not has_dep and not ep.url:
        raise PlanError("target.api_endpoint.url is required when deployment is none")
    model_id = _model_id(cfg)
    inv_dir = os.path.join(cfg.execution.output_dir, invocation_id)
    executor = executor_name(cfg.execution)

    # deployment groups: one shared deployment unless a task asks for its own
    groups: dict[int, str | None] = {}
    for i, t in enumerate(tasks):
        dep = t.deployment if t.deployment is not None else cfg.deployment
        if isinstance(dep, NoDeployment):
            groups[i] = None
        elif t.deployment is not None or dep.separate_per_task:
            groups[i] = f"{invocation_id}.d{i}"
        else:
            groups[i] = f"{invocation_id}.d"
    members: dict[str, list[str]] = {}
    for i, g in groups.items():
        if g:
            members.setdefault(g, []).append(job_id(invocation_id, i))

    seen: dict[str, int] = {}
    jobs: list[JobSpec] = []
    for i, (t, entry) in enumerate(zip(tasks, entries, strict=True)):
        etype = t.endpoint_type or ep.type or infer_endpoint_type(ep.url)
        if etype is None:
            etype = entry.endpoint_types[0] if (has_dep or groups[i]) else None
        if etype is None:
            raise PlanError(
                f"target.api_endpoint.type is needed: the url {ep.url!r} ends neither in /chat/completions "
                "nor /completions; set type: chat or type: completions"
            )
        if etype not in entry.endpoint_types:
            raise PlanError(
                f"evaluation.tasks[{i}] ({t.name}) does not support endpoint type {etype!r}; "
                f"supported: {', '.join(entry.endpoint_types)}"
            )
        params = TaskParams().merged(entry.params).merged(cfg.config.params)
        params = params.merged(cfg.evaluation.params).merged(t.params)
        n = seen.get(t.name, 0)
        seen[t.name] = n + 1
        dirname = t.name if n == 0 else f"{t.name}.{n + 1}"
        dep = t.deployment if t.deployment is not None else cfg.deployment
        group = groups[i]
        url = None if group else ep.url
        jobs.append(
            JobSpec(
                job_id=job_id(invocation_id, i),
                invocation_id=invocation_id,
                index=i,
                task=entry,
                params=params,
                endpoint=EndpointSpec(url=url, model_id=model_id, type=etype, api_key_name=ep.api_key_name),
                execution=cfg.execution,
                deployment=None if group is None else dep,
                deployment_group=group,
                group_jobs=members.get(group, []) if group else [],
                invocation_dir=inv_dir,
                task_dir=os.path.join(inv_dir, dirname),
                created_at=now,
            )
        )
    _ = executor
    return jobs
