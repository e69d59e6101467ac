"""Per-type deployment specs: image, server command, env, port, health path, mounts.

Types: ``none`` (no spec), ``vllm``, ``sglang``, ``nim``, ``trtllm``, ``generic`` (own image
and command) and ``llamacpp`` (CPU ``llama_cpp.server``; the image ``nv-eval/llamacpp:latest``
built by ``nv-eval images build --llamacpp`` ships the SmolLM2 GGUF). A checkpoint on the
host (``model_path``/``checkpoint_path``) is mounted read-only at ``/checkpoint``.
Secrets are env var NAMES (``env_names``), never values.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import msgspec
from nv_eval.protocol import (
    DeploymentConfig,
    GenericDeployment,
    JobSpec,
    LlamaCppDeployment,
    NimDeployment,
    NoDeployment,
    SglangDeployment,
    TrtllmDeployment,
    VllmDeployment,
)

DEFAULT_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:latest",
    "sglang": "lmsysorg/sglang:latest",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:latest",
    "llamacpp": "nv-eval/llamacpp:latest",
}
SMOLLM2_IN_IMAGE = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_MOUNT = "/checkpoint"


class DeploymentSpecError(ValueError):
    """The deployment config cannot be turned into a container (message names the field)."""


@dataclass
class DeploymentSpec:
    """One deployment container, independent of where it runs."""

    type: str
    image: str
    command: list[str] | None  # None: the image's default command
    port: int
    health_path: str
    served_model_name: str
    readiness_timeout: float
    env: dict[str, str] = field(default_factory=dict)
    env_names: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)  # host:container[:ro]
    gpus: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "image": self.image,
            "command": self.command,
            "port": self.port,
            "health_path": self.health_path,
            "served_model_name": self.served_model_name,
            "env": dict(self.env),
            "env_names": list(self.env_names),
            "mounts": list(self.binds),
            "gpus": self.gpus,
        }


def deployment_type(dep: DeploymentConfig) -> str:
    return str(msgspec.inspect.type_info(type(dep)).tag)  # type: ignore[attr-defined]


def group_of(job: JobSpec) -> str:
    """The deployment group of a job (a job without a group has its own)."""
    return job.deployment_group or f"job-{job.job_id}"


def _model_ref(dep: Any, binds: list[str]) -> str:
    path = dep.checkpoint_path or dep.model_path
    if path:
        binds.append(f"{path}:{CHECKPOINT_MOUNT}:ro")
        return CHECKPOINT_MOUNT
    handle = dep.hf_model_handle or dep.model_id
    if not handle:
        raise DeploymentSpecError(
            f"deployment ({deployment_type(dep)}): set checkpoint_path/model_path or hf_model_handle/model_id"
        )
    return str(handle)


def deployment_spec(job: JobSpec) -> DeploymentSpec | None:
    """The container to deploy for ``job``, or None when it needs no deployment."""
    dep = job.deployment
    if dep is None or isinstance(dep, NoDeployment):
        return None
    kind = deployment_type(dep)
    name = dep.served_model_name or job.endpoint.model_id
    binds: list[str] = []
    env = dict(dep.env)
    port = dep.port
    command: list[str] | None
    if isinstance(dep, LlamaCppDeployment):
        model = SMOLLM2_IN_IMAGE
        if dep.model_path:
            model = f"/models/host/{PurePosixPath(dep.model_path).name}"
            binds.append(f"{dep.model_path}:{model}:ro")
        command = ["python3.11", "-m", "llama_cpp.server", "--model", model, "--model_alias", name,
                   "--host", "0.0.0.0", "--port", str(port), "--n_ctx", str(dep.n_ctx)]  # fmt: skip
        if dep.n_threads:
            command += ["--n_threads", str(dep.n_threads)]
        if dep.add_bos_token:
            command += ["--kv_overrides", "tokenizer.ggml.add_bos_token=bool:true"]
        command += list(dep.extra_args)
    elif isinstance(dep, VllmDeployment):
        model = _model_ref(dep, binds)
        command = ["--model", model, "--served-model-name", name, "--host", "0.0.0.0", "--port", str(port),
                   "--tensor-parallel-size", str(dep.tensor_parallel_size),
                   "--pipeline-parallel-size", str(dep.pipeline_parallel_size)]  # fmt: skip
        if dep.data_parallel_size > 1:
            command += ["--data-parallel-size", str(dep.data_parallel_size)]
        if dep.gpu_memory_utilization is not None:
            command += ["--gpu-memory-utilization", str(dep.gpu_memory_utilization)]
        command += list(dep.extra_args)
    elif isinstance(dep, SglangDeployment):
        model = _model_ref(dep, binds)
        command = ["python3", "-m", "sglang.launch_server", "--model-path", model, "--served-model-name", name,
                   "--host", "0.0.0.0", "--port", str(port), "--tp", str(dep.tensor_parallel_size),
                   "--dp", str(dep.data_parallel_size)]  # fmt: skip
        if dep.gpu_memory_utilization is not None:
            command += ["--mem-fraction-static", str(dep.gpu_memory_utilization)]
        command += list(dep.extra_args)
    elif isinstance(dep, TrtllmDeployment):
        model = _model_ref(dep, binds)
        command = ["trtllm-serve", model, "--host", "0.0.0.0", "--port", str(port),
                   "--tp_size", str(dep.tensor_parallel_size), "--pp_size", str(dep.pipeline_parallel_size)]  # fmt: skip
        command += list(dep.extra_args)
    elif isinstance(dep, NimDeployment):
        if not dep.image:
            raise DeploymentSpecError("deployment (nim): set deployment.image to the NIM container (nvcr.io/nim/...)")
        command = None  # NIM images start their server themselves; configured through env
        env.setdefault("NIM_SERVED_MODEL_NAME", name)
        env.setdefault("NIM_SERVER_PORT", str(port))
        if dep.tensor_parallel_size > 1:
            env.setdefault("NIM_TENSOR_PARALLEL_SIZE", str(dep.tensor_parallel_size))
        if dep.checkpoint_path or dep.model_path:
            env.setdefault("NIM_MODEL_NAME", _model_ref(dep, binds))
    elif isinstance(dep, GenericDeployment):
        if not dep.image or not dep.command:
            raise DeploymentSpecError("deployment (generic): set both deployment.image and deployment.command")
        command = ["sh", "-c", dep.command]
        if dep.extra_args:
            command[-1] += " " + shlex.join(dep.extra_args)
    else:  # pragma: no cover - a new type in the protocol
        raise DeploymentSpecError(f"deployment type {kind!r} is not supported by this agent")
    health = dep.health_path
    if isinstance(dep, NimDeployment) and health == "/health":
        health = "/v1/health/ready"
    image = dep.image or DEFAULT_IMAGES.get(kind)
    if not image:
        raise DeploymentSpecError(f"deployment ({kind}): set deployment.image")
    return DeploymentSpec(
        type=kind,
        image=image,
        command=command,
        port=port,
        health_path=health,
        served_model_name=name,
        readiness_timeout=dep.readiness_timeout,
        env=env,
        env_names=list(dep.env_names),
        binds=binds,
        gpus=dep.gpus,
    )
