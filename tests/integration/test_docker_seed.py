"""The seed's ``local_llama_3_1_8b_instruct`` config verbatim through the real CLI, embedded daemon,
local agent and the Docker runtime (only ``target.api_endpoint.url`` and a sample limit set by ``-o``).

The endpoint is SmolLM2 behind llama_cpp.server, served under the seed's model name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.docker import build_images, docker_ps, start_dockerd
from tests._support.services import free_port, smollm2_gguf, wait_http

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
SEED_MODEL = "meta/llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def seed_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    start_dockerd()
    build_images(harness=True, llamacpp=False)
    port = free_port()
    log = tmp_path_factory.mktemp("seedllama") / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", SEED_MODEL,
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", "--n_ctx", "2048",
         "--kv_overrides", "tokenizer.ggml.add_bos_token=bool:true"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 120, proc)
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_seed_config_verbatim_on_docker(seed_endpoint: str, tmp_path: Path) -> None:
    env = {**os.environ, "NV_EVAL_HOME": str(tmp_path / "home")}
    env.pop("NV_EVAL_NATS_URL", None)
    nv = [str(Path(sys.executable).parent / "nv-eval")]
    out = tmp_path / "out"
    try:
        p = subprocess.run(
            [*nv, "run", "--config-dir", str(REPO / "examples"), "--config-name", "local_llama_3_1_8b_instruct",
             "-o", f"target.api_endpoint.url={seed_endpoint}", "-o", "+config.params.limit_samples=2",
             "-o", f"execution.output_dir={out}"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        inv = p.stdout.split()[0]
        deadline = time.monotonic() + 600
        doc: dict = {}
        while time.monotonic() < deadline:
            s = subprocess.run([*nv, "status", inv, "--json"], capture_output=True, text=True, env=env, timeout=60)
            doc = json.loads(s.stdout).get("invocation", {})
            if doc.get("state") in ("succeeded", "failed", "killed"):
                break
            time.sleep(2)
        assert doc.get("state") == "succeeded", doc
        for task in ("hellaswag", "arc_challenge", "winogrande"):
            res = json.loads((out / inv / task / "results.json").read_text())
            assert res["n_samples"] == 2 and res["model_id"] == SEED_MODEL
        jobs = list((tmp_path / "home").rglob(f"{inv}.*.json"))
        assert jobs and all('"runtime":"docker"' in j.read_text() for j in jobs), "ran on the docker runtime"
        assert not docker_ps(f"nv-eval.invocation={inv}")
    finally:
        subprocess.run([*nv, "daemon", "stop"], capture_output=True, env=env, timeout=60)


def test_seed_config_with_llamacpp_deployment_one_model_container(tmp_path: Path) -> None:
    """The seed config with ``deployment=llamacpp`` on a bridge network through the real daemon and agent:
    its tasks run one after another (max_parallel_tasks 1) and share ONE model container, which
    lingers between them and is gone at the end with the network."""
    import threading

    start_dockerd()
    build_images(harness=True, llamacpp=True)
    env = {**os.environ, "NV_EVAL_HOME": str(tmp_path / "home")}
    env.pop("NV_EVAL_NATS_URL", None)
    nv = [str(Path(sys.executable).parent / "nv-eval")]
    out = tmp_path / "out"
    models: set[str] = set()
    stop = threading.Event()
    inv = ""

    def poll() -> None:
        while not stop.is_set():
            models.update(docker_ps("nv-eval.role=deployment", f"nv-eval.invocation={inv}") if inv else [])
            stop.wait(0.5)

    t = threading.Thread(target=poll, daemon=True)
    try:
        p = subprocess.run(
            [*nv, "run", "--config-dir", str(REPO / "examples"), "--config-name", "local_llama_3_1_8b_instruct",
             "-o", "deployment=llamacpp", "-o", "execution.network=bridge", "-o", "deployment.n_threads=2",
             "-o", "+config.params.limit_samples=2", "-o", f"execution.output_dir={out}"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        inv = p.stdout.split()[0]
        t.start()
        deadline = time.monotonic() + 600
        doc: dict = {}
        while time.monotonic() < deadline:
            s = subprocess.run([*nv, "status", inv, "--json"], capture_output=True, text=True, env=env, timeout=60)
            doc = json.loads(s.stdout).get("invocation", {})
            if doc.get("state") in ("succeeded", "failed", "killed"):
                break
            time.sleep(2)
        assert doc.get("state") == "succeeded", doc
        deadline = time.monotonic() + 60  # the last job's teardown removes the model container
        while docker_ps(f"nv-eval.invocation={inv}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not docker_ps(f"nv-eval.invocation={inv}")
        assert len(models) == 1, models
        nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label=nv-eval.invocation={inv}"],
                              capture_output=True, text=True, timeout=30).stdout.split()  # fmt: skip
        assert not nets
    finally:
        stop.set()
        subprocess.run([*nv, "daemon", "stop"], capture_output=True, env=env, timeout=60)
