"""Container specs of the Docker runtime (pure: no dockerd needed): args, deployments, dry-run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nv_eval.agents.deploy import deployment_spec
from nv_eval.agents.local._docker import DockerRuntime
from nv_eval.agents.local._docker_args import DockerArgsError, parse_docker_args
from nv_eval.agents.local._docker_spec import benchmark_spec, create_config, deployment_container_spec

from tests._support.docker import plan


def _doc(tmp: Path, deployment: dict[str, Any] | None = None, **execution: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "execution": {"type": "local", "runtime": "docker", "output_dir": str(tmp), **execution},
        "target": {"api_endpoint": {"model_id": "m1", "url": "http://127.0.0.1:8000/v1/completions",
                                    "api_key_name": "MY_SECRET_KEY"}},
        "evaluation": {"tasks": [{"name": "arc_challenge"}, {"name": "hellaswag"}], "params": {"limit_samples": 5}},
    }  # fmt: skip
    if deployment:
        doc["deployment"] = deployment
    return doc


def test_docker_args_mapping() -> None:
    x = parse_docker_args(["--shm-size", "1g", "--ulimit", "nofile=1024:2048", "-e", "HF_TOKEN", "-e", "A=b",
                           "-v", "/data:/data:ro", "--cpus=1.5", "--memory", "512m", "--gpus", "all"])  # fmt: skip
    assert x.host_config["ShmSize"] == 1024**3
    assert x.host_config["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert x.env_names == ["HF_TOKEN"] and x.env == {"A": "b"} and x.binds == ["/data:/data:ro"]
    assert x.host_config["NanoCpus"] == 1_500_000_000 and x.host_config["Memory"] == 512 * 1024**2
    assert x.host_config["DeviceRequests"][0]["Count"] == -1
    with pytest.raises(DockerArgsError, match="--rm"):
        parse_docker_args(["--rm"])
    with pytest.raises(DockerArgsError, match="--cpus"):
        parse_docker_args(["--cpus", "lots"])


def test_benchmark_spec_passes_secrets_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_KEY", "s3cr3t-value")
    job = plan(_doc(tmp_path, cpus=2, memory="1g", gpus=2, extra_docker_args=["-e", "HF_TOKEN"]))[0]
    spec = benchmark_spec(job, None, "agent-1")
    assert spec.command[:4] == ["nv-eval-harness", "run", "--task", "arc_challenge"]
    assert "--api-key-env" in spec.command and "MY_SECRET_KEY" in spec.command
    assert spec.env_names == ["HF_TOKEN", "MY_SECRET_KEY"]
    assert spec.labels == {"nv-eval.invocation": job.invocation_id, "nv-eval.job": job.job_id,
                           "nv-eval.role": "benchmark", "nv-eval.agent": "agent-1"}  # fmt: skip
    assert spec.binds[0].endswith(":/work/output") and spec.network == "host"
    cfg, missing = create_config(spec)
    assert "MY_SECRET_KEY=s3cr3t-value" in cfg["Env"] and missing == ["HF_TOKEN"]
    assert cfg["HostConfig"]["NanoCpus"] == 2_000_000_000 and cfg["HostConfig"]["DeviceRequests"][0]["Count"] == 2
    described = json.dumps(spec.describe()) + DockerRuntime().describe([job])
    assert "s3cr3t-value" not in described and "MY_SECRET_KEY" in described


def test_llamacpp_deployment_on_bridge(tmp_path: Path) -> None:
    jobs = plan(_doc(tmp_path, {"type": "llamacpp", "port": 8123}, network="bridge"))
    assert jobs[0].deployment_group == jobs[1].deployment_group
    spec, cspec = deployment_container_spec(jobs[0]) or (None, None)
    assert spec is not None and cspec is not None
    assert spec.image == "nv-eval/llamacpp:latest" and spec.health_path == "/v1/models"
    assert "--kv_overrides" in spec.command and "tokenizer.ggml.add_bos_token=bool:true" in spec.command
    assert cspec.network == f"nv-eval-{jobs[0].invocation_id}"
    assert cspec.labels["nv-eval.role"] == "deployment"
    text = DockerRuntime().describe(jobs)
    assert text.count("# deployment ") == 1, "one shared deployment"
    assert f"http://{cspec.name}:8123/v1/completions" in text, "the target URL comes from the deployment"


@pytest.mark.parametrize(
    ("dep", "image", "head", "health"),
    [
        ({"type": "vllm", "hf_model_handle": "meta/llama", "tensor_parallel_size": 2}, "vllm/vllm-openai:latest",
         "--model", "/health"),
        ({"type": "sglang", "checkpoint_path": "/ckpt"}, "lmsysorg/sglang:latest", "python3", "/health"),
        ({"type": "trtllm", "model_id": "x"}, "nvcr.io/nvidia/tensorrt-llm/release:latest", "trtllm-serve", "/health"),
        ({"type": "nim", "image": "nvcr.io/nim/meta/llama:1"}, "nvcr.io/nim/meta/llama:1", None, "/v1/health/ready"),
        ({"type": "generic", "image": "busybox", "command": "httpd -f"}, "busybox", "sh", "/health"),
    ],
)  # fmt: skip
def test_deployment_types(tmp_path: Path, dep: dict[str, Any], image: str, head: str | None, health: str) -> None:
    job = plan(_doc(tmp_path, dep))[0]
    spec = deployment_spec(job)
    assert spec is not None and spec.image == image and spec.health_path == health
    assert (spec.command[0] if spec.command else None) == head
    if dep["type"] == "vllm":
        assert spec.command[spec.command.index("--tensor-parallel-size") + 1] == "2"
    if dep["type"] == "sglang":
        assert spec.binds == ["/ckpt:/checkpoint:ro"]


def test_nim_without_image_is_a_clear_error(tmp_path: Path) -> None:
    job = plan(_doc(tmp_path, {"type": "nim", "model_id": "x"}))[0]
    text = DockerRuntime().describe([job])
    assert "deployment (nim): set deployment.image" in text
