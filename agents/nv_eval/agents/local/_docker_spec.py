"""Container specs for the Docker runtime: names, labels, networks, create configs.

Pure functions of the JobSpec (no Docker calls), shared by ``launch`` and the dry-run, so
``describe`` shows exactly what is created. A spec lists env var NAMES only; the values of
passed-through variables are read from the agent's environment at create time
(:func:`create_config`), like ``docker run -e NAME``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from nv_eval.protocol import JobSpec, LocalExecution

from .._harness import endpoint_url_for, harness_run_args
from ..deploy.specs import DeploymentSpec, deployment_spec, group_of
from ._docker_args import gpu_requests, parse_docker_args, parse_size

LABEL_INVOCATION = "nv-eval.invocation"
LABEL_JOB = "nv-eval.job"
LABEL_ROLE = "nv-eval.role"  # benchmark | deployment | network
LABEL_GROUP = "nv-eval.deployment-group"
LABEL_AGENT = "nv-eval.agent"
OUTPUT_MOUNT = "/work/output"
DEFAULT_HARNESS_IMAGE = "nv-eval/harness:latest"


def _safe(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text)


def benchmark_name(job: JobSpec) -> str:
    return _safe(f"nv-eval-{job.invocation_id}-{job.index}-a{job.attempt}")


def deployment_name(group: str) -> str:
    return _safe(f"nv-eval-dep-{group}")


def bridge_network_name(invocation_id: str) -> str:
    return _safe(f"nv-eval-{invocation_id}")


def execution(job: JobSpec) -> LocalExecution:
    ex = job.execution
    return ex if isinstance(ex, LocalExecution) else LocalExecution()


def network_for(job: JobSpec) -> str:
    """``host``, the per-invocation bridge network's name, or a user's named network."""
    ex = execution(job)
    net = parse_docker_args(list(ex.extra_docker_args)).network or ex.network
    if net == "bridge":
        return bridge_network_name(job.invocation_id)
    return net


def deployment_base_url(spec: DeploymentSpec, network: str, group: str) -> str:
    """The deployment's URL as the benchmark containers (and the agent on host networking) reach it."""
    if network == "host":
        return f"http://127.0.0.1:{spec.port}/v1"
    return f"http://{deployment_name(group)}:{spec.port}/v1"


@dataclass
class ContainerSpec:
    """Everything ``docker create`` needs, with env var names instead of secret values."""

    name: str
    image: str
    command: list[str] | None
    labels: dict[str, str]
    network: str
    env: dict[str, str] = field(default_factory=dict)  # non-secret values
    env_names: list[str] = field(default_factory=list)  # passed through by name
    binds: list[str] = field(default_factory=list)
    host_config: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "command": self.command,
            "network": self.network,
            "env": sorted(self.env),  # names only, even for non-secret values
            "env_names": list(self.env_names),
            "mounts": list(self.binds),
            "labels": dict(self.labels),
            "resources": {k: v for k, v in self.host_config.items() if k not in ("Binds", "NetworkMode")},
            **({"user": self.user} if self.user else {}),
        }


def _resources(ex: LocalExecution, gpus: Any) -> dict[str, Any]:
    hc: dict[str, Any] = {}
    if ex.cpus:
        hc["NanoCpus"] = int(ex.cpus * 1e9)
    if ex.memory:
        hc["Memory"] = parse_size(ex.memory, "execution.memory")
    if ex.shm_size:
        hc["ShmSize"] = parse_size(ex.shm_size, "execution.shm_size")
    if gpus is not None:
        hc["DeviceRequests"] = gpu_requests(gpus)
    return hc


def image_for(job: JobSpec) -> str:
    ex = execution(job)
    if job.task.harness == "builtin" and ex.harness_image:
        return ex.harness_image
    return job.task.image or DEFAULT_HARNESS_IMAGE


def benchmark_spec(job: JobSpec, endpoint_base: str | None, agent_id: str = "") -> ContainerSpec:
    """The benchmark container of ``job`` (``endpoint_base``: the deployment URL, if any)."""
    ex = execution(job)
    extras = parse_docker_args(list(ex.extra_docker_args))
    net = network_for(job)
    url = endpoint_url_for(endpoint_base, job.endpoint.type) if endpoint_base else (job.endpoint.url or "")
    if job.task.harness == "builtin":
        command = ["nv-eval-harness", *harness_run_args(job, endpoint_url=url, output_dir=OUTPUT_MOUNT)]
    else:
        from ..external import external_command

        command = external_command(job, endpoint_url=url, output_dir=OUTPUT_MOUNT)
    env_names = list(dict.fromkeys([*ex.env_names, *extras.env_names]))
    if job.endpoint.api_key_name and job.endpoint.api_key_name not in env_names:
        env_names.append(job.endpoint.api_key_name)
    hc = _resources(ex, ex.gpus)
    hc.update(extras.host_config)
    labels = {
        LABEL_INVOCATION: job.invocation_id,
        LABEL_JOB: job.job_id,
        LABEL_ROLE: "benchmark",
    }
    if job.deployment_group:
        labels[LABEL_GROUP] = job.deployment_group
    if agent_id:
        labels[LABEL_AGENT] = agent_id
    return ContainerSpec(
        name=benchmark_name(job),
        image=image_for(job),
        command=command,
        labels=labels,
        network=net,
        env={**ex.env, **extras.env, "PYTHONUNBUFFERED": "1"},
        env_names=env_names,
        binds=[f"{os.path.abspath(job.task_dir)}:{OUTPUT_MOUNT}", *extras.binds],
        host_config=hc,
        user=extras.user or (f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None),
        workdir=OUTPUT_MOUNT,
    )


def deployment_container_spec(job: JobSpec, agent_id: str = "") -> tuple[DeploymentSpec, ContainerSpec] | None:
    spec = deployment_spec(job)
    if spec is None:
        return None
    ex = execution(job)
    group = group_of(job)
    hc = _resources(LocalExecution(shm_size=ex.shm_size), spec.gpus)
    labels = {LABEL_INVOCATION: job.invocation_id, LABEL_ROLE: "deployment", LABEL_GROUP: group}
    if agent_id:
        labels[LABEL_AGENT] = agent_id
    return spec, ContainerSpec(
        name=deployment_name(group),
        image=spec.image,
        command=spec.command,
        labels=labels,
        network=network_for(job),
        env=dict(spec.env),
        env_names=list(spec.env_names),
        binds=list(spec.binds),
        host_config=hc,
    )


def create_config(spec: ContainerSpec) -> tuple[dict[str, Any], list[str]]:
    """The Docker API create body; also the env NAMES that are not set on this agent."""
    env = [f"{k}={v}" for k, v in spec.env.items()]
    missing: list[str] = []
    for name in spec.env_names:
        if name in os.environ:
            env.append(f"{name}={os.environ[name]}")  # value only in the API body, like `docker run -e NAME`
        else:
            missing.append(name)
    hc = dict(spec.host_config)
    hc["Binds"] = list(spec.binds)
    hc["NetworkMode"] = spec.network
    hc["Init"] = True  # signals reach the harness; zombies are reaped
    cfg: dict[str, Any] = {
        "Image": spec.image,
        "Env": env,
        "Labels": dict(spec.labels),
        "HostConfig": hc,
        "Tty": False,
        "AttachStdout": False,
        "AttachStderr": False,
    }
    if spec.command is not None:
        cfg["Cmd"] = list(spec.command)
    if spec.user:
        cfg["User"] = spec.user
    if spec.workdir:
        cfg["WorkingDir"] = spec.workdir
    return cfg, missing
