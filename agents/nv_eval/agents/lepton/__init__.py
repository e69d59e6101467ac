"""The ``lepton`` executor (DGX Cloud Lepton), dry-run only for now.

``describe(jobs)`` prints the Lepton API calls that would be sent (see
``/work/shared/notes/lepton-api.md``): one endpoint (``POST /deployments``) per deployment
group and one batch job (``POST /jobs``) per task. Secrets are referenced by NAME
(``value_from.secret_name_ref``), never by value. ``runtime_for`` is not implemented yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from nv_eval.protocol import JobSpec, LeptonExecution, NoDeployment

from .._executor import Executor
from .._harness import endpoint_url_for, harness_run_args
from .._runtime import Runtime

__all__ = ["LeptonExecutor", "endpoint_payload", "job_payload"]

_WORKDIR = "/workspace"
_DEFAULT_IMAGES = {
    "vllm": "vllm/vllm-openai:latest",
    "sglang": "lmsysorg/sglang:latest",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:latest",
}


def _name(*parts: str) -> str:
    """A Lepton name: ``^[a-z][a-z0-9-]*$``, at most 36 characters."""
    s = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    s = re.sub(r"-{2,}", "-", s)
    if not s or not s[0].isalpha():
        s = "n" + s
    return s[:36].rstrip("-")


def _dep_type(dep: Any) -> str:
    return str(msgspec.inspect.type_info(type(dep)).tag)  # type: ignore[attr-defined]


def _envs(env: dict[str, str], env_names: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    out += [{"name": n, "value_from": {"secret_name_ref": n}} for n in env_names]
    return out


def _execution(job: JobSpec) -> LeptonExecution:
    ex = job.execution
    return ex if isinstance(ex, LeptonExecution) else LeptonExecution()


def _affinity(ex: LeptonExecution) -> dict[str, Any]:
    return {"affinity": {"allowed_dedicated_node_groups": [ex.node_group]}} if ex.node_group else {}


def endpoint_name(job: JobSpec) -> str:
    return _name("nve", job.invocation_id[:8], job.deployment_group or f"t{job.index}")


def endpoint_payload(job: JobSpec) -> dict[str, Any] | None:
    """``POST /deployments`` body for the job's deployment (None when the job deploys nothing)."""
    dep = job.deployment
    if dep is None or isinstance(dep, NoDeployment):
        return None
    ex = _execution(job)
    kind = _dep_type(dep)
    served = dep.served_model_name or job.endpoint.model_id
    model = getattr(dep, "checkpoint_path", None) or getattr(dep, "model_path", None) or getattr(dep, "hf_model_handle", None) or getattr(dep, "model_id", None) or served
    command: list[str] | None
    if kind == "vllm":
        command = ["vllm", "serve", str(model), f"--port={dep.port}", f"--served-model-name={served}",
                   f"--tensor-parallel-size={getattr(dep, 'tensor_parallel_size', 1)}", *dep.extra_args]  # fmt: skip
    elif kind == "sglang":
        command = ["python3", "-m", "sglang.launch_server", f"--model-path={model}", f"--port={dep.port}",
                   "--host=0.0.0.0", f"--served-model-name={served}", *dep.extra_args]  # fmt: skip
    elif kind == "generic" and getattr(dep, "command", None):
        command = ["/bin/bash", "-c", str(dep.command)]
    else:
        command = None  # the image's own entrypoint (NIM) or not supported here
    container: dict[str, Any] = {"image": dep.image or _DEFAULT_IMAGES.get(kind, f"<image for {kind}>"),
                                 "ports": [{"container_port": dep.port}]}  # fmt: skip
    if command:
        container["command"] = command
    name = endpoint_name(job)
    return {
        "metadata": {"id": name, "name": name, "visibility": "private"},
        "spec": {
            "container": container,
            "resource_requirement": {
                "resource_shape": ex.endpoint_resource_shape or ex.resource_shape,
                "min_replicas": 1,
                "max_replicas": 1,
                **_affinity(ex),
            },
            "envs": _envs(dep.env, [*dep.env_names, *ex.env_names]),
            "image_pull_secrets": list(ex.image_pull_secrets),
            "health": {"liveness": {"initial_delay_seconds": int(min(dep.readiness_timeout, 1800))}},
        },
    }


def job_payload(job: JobSpec) -> dict[str, Any]:
    """``POST /jobs`` body running ``nv-eval-harness run`` for one task."""
    ex = _execution(job)
    deployed = endpoint_payload(job) is not None
    if deployed:
        url = endpoint_url_for(f"<external_endpoint of {endpoint_name(job)}>/v1", job.endpoint.type)
    else:
        url = job.endpoint.url or ""
    out_dir = f"{_WORKDIR}/{job.invocation_id}/{job.task_dir.rstrip('/').rsplit('/', 1)[-1]}"
    cmd = ["nv-eval-harness", *harness_run_args(job, endpoint_url=url, output_dir=out_dir)]
    names = list(ex.env_names)
    if job.endpoint.api_key_name:
        names.append(job.endpoint.api_key_name)
    return {
        "metadata": {"name": _name("nve", job.invocation_id[:8], str(job.index), job.task.name), "visibility": "private"},
        "spec": {
            "resource_shape": "cpu.small" if deployed else ex.resource_shape,
            **_affinity(ex),
            "container": {"image": job.task.image, "command": cmd},
            "shared_memory_size": 1024,
            "completions": 1,
            "parallelism": 1,
            "max_failure_retry": 0,
            "envs": _envs(ex.env, names),
            "image_pull_secrets": list(ex.image_pull_secrets),
            "ttl_seconds_after_finished": 600,
        },
    }


class LeptonExecutor(Executor):
    name = "lepton"

    def describe(self, jobs: Sequence[JobSpec]) -> str:
        lines: list[str] = []
        seen: set[str] = set()
        for job in jobs:
            ep = endpoint_payload(job)
            if ep is not None and endpoint_name(job) not in seen:
                seen.add(endpoint_name(job))
                lines.append(f"# endpoint for deployment group {job.deployment_group or job.job_id}")
                lines.append(f"POST /deployments {json.dumps(ep, indent=2)}")
            lines.append(f"# job {job.job_id} ({job.task.name})")
            lines.append(f"POST /jobs {json.dumps(job_payload(job), indent=2)}")
        return "\n".join(lines)

    def runtime_for(self, job: JobSpec) -> Runtime:
        raise ValueError("Lepton runtime not implemented yet (the lepton executor supports --dry-run only)")
