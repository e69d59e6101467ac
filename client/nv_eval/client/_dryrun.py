"""Dry-run rendering: the resolved config and, per job, what the executor plugin would launch.

Executors are loaded from the entry point group ``nv_eval.executors`` and asked to
``describe(jobs)``; nothing is started or written. If the plugin is missing or fails,
the job plan is still printed and the reason is stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nv_eval.protocol import JobSpec, executor_name

from ._compose import ComposedRun

ENTRY_POINT_GROUP = "nv_eval.executors"


def load_executor(name: str) -> Any:
    """Instantiate the executor plugin ``name``; raises LookupError with a one-line reason."""
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not eps:
        raise LookupError(f"no executor plugin {name!r} is installed (entry point group {ENTRY_POINT_GROUP})")
    try:
        cls = eps[0].load()
        return cls()
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break dry-run
        raise LookupError(f"executor plugin {name!r} cannot be loaded: {type(e).__name__}: {e}") from None


def job_plan(jobs: Sequence[JobSpec]) -> str:
    """The executor-independent plan: one block per job."""
    import msgspec

    out: list[str] = []
    for j in jobs:
        params = {k: v for k, v in msgspec.structs.asdict(j.params).items() if v not in (None, {}, [])}
        dep = "none"
        if j.deployment is not None:
            dep = f"{msgspec.inspect.type_info(type(j.deployment)).tag} (group {j.deployment_group})"  # type: ignore[attr-defined]
        out.append(f"job {j.job_id}: task {j.task.name} ({j.task.harness}, image {j.task.image})")
        out.append(f"  endpoint: {j.endpoint.url or '<from deployment>'} type={j.endpoint.type} model={j.endpoint.model_id}"
                   + (f" api_key_env={j.endpoint.api_key_name}" if j.endpoint.api_key_name else ""))
        out.append(f"  deployment: {dep}")
        out.append(f"  params: {params}")
        out.append(f"  output: {j.task_dir}")
    return "\n".join(out)


_SECRETISH = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "CREDENTIAL", "PRIVATE")


def mask_secrets(doc: Any) -> Any:
    """Copy of a config document with the values of secret-looking ``env`` entries masked."""
    if isinstance(doc, list):
        return [mask_secrets(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k == "env" and isinstance(v, dict):
            out[k] = {ek: ("***" if any(s in str(ek).upper() for s in _SECRETISH) else ev) for ek, ev in v.items()}
        else:
            out[k] = mask_secrets(v)
    return out


def render(run: ComposedRun) -> str:
    """The whole dry-run text: resolved config YAML, job plan, executor description."""
    import yaml

    jobs = run.plan()
    name = executor_name(run.config.execution)
    parts = [
        "# resolved configuration",
        yaml.safe_dump(mask_secrets(run.doc), sort_keys=False, default_flow_style=False).rstrip(),
        "",
        f"# plan: {len(jobs)} job(s) on executor {name!r} (invocation id assigned at submission)",
        job_plan(jobs),
        "",
    ]
    try:
        executor = load_executor(name)
        described = executor.describe(jobs)
        parts += [f"# what executor {name!r} would launch", str(described).rstrip()]
    except LookupError as e:
        parts += [f"# executor {name!r}: not available here ({e}); only the job plan is shown"]
    except Exception as e:  # noqa: BLE001
        parts += [f"# executor {name!r}: describe() failed ({type(e).__name__}: {e}); only the job plan is shown"]
    parts.append("# dry run: nothing was started or written")
    return "\n".join(parts) + "\n"
