"""The seed's commands, verbatim, against the seed's example configs with ``--dry-run``:
each succeeds, prints the resolved config and the launch plan, and starts/writes nothing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SEED_RUNS = [
    "nv-eval run --config-dir examples --config-name local_llama_3_1_8b_instruct",
    "nv-eval run --config-dir examples --config-name slurm_llama_3_1_8b_instruct",
    "nv-eval run --config-dir examples --config-name lepton_vllm_llama_3_1_8b_instruct",
    "nv-eval run --config-dir examples --config-name local_llama_3_1_8b_instruct -o +config.params.limit_samples=10",
    "nv-eval run --config-dir examples --config-name local_llama_3_1_8b_instruct "
    "-o execution.output_dir=my_results -o target.api_endpoint.model_id=model/another/one",
    "nv-eval run --config-dir examples --config-name local_llama_3_1_8b_instruct --dry-run",
    "nv-eval run --config-dir examples --config-name local_smollm2_process",
]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
    env.update(NV_EVAL_HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "xdg"))
    return env


def _run(cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(cmd)
    assert argv[0] == "nv-eval"
    return subprocess.run([sys.executable, "-m", "nv_eval.client.cli", *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def seed_cwd(tmp_path: Path, repo_root: Path) -> Path:
    """A copy of the repo's examples/ in a fresh cwd, so relative output dirs can be checked."""
    cwd = tmp_path / "cwd"
    (cwd / "examples").mkdir(parents=True)
    for p in (repo_root / "examples").glob("*.yaml"):
        (cwd / "examples" / p.name).write_text(p.read_text())
    return cwd


def test_examples_are_the_seeds(repo_root: Path) -> None:
    for name in ("local_llama_3_1_8b_instruct", "slurm_llama_3_1_8b_instruct", "lepton_vllm_llama_3_1_8b_instruct"):
        doc = yaml.safe_load((repo_root / "examples" / f"{name}.yaml").read_text())
        assert doc["defaults"][-1] == "_self_"
        assert [t["name"] for t in doc["evaluation"]["tasks"]] == ["hellaswag", "arc_challenge", "winogrande"]


@pytest.mark.parametrize("cmd", SEED_RUNS)
def test_seed_command_dry_run(cmd: str, seed_cwd: Path, tmp_path: Path) -> None:
    if "--dry-run" not in cmd:
        cmd += " --dry-run"
    before = sorted(p.name for p in seed_cwd.iterdir())
    r = _run(cmd, seed_cwd, _env(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    head, _, rest = out.partition("\n# plan: ")
    doc = yaml.safe_load(head)
    assert set(doc) >= {"execution", "deployment", "target", "evaluation"}
    assert os.path.isabs(doc["execution"]["output_dir"])
    assert [line.split()[1] for line in rest.splitlines() if line.startswith("job ")] == [
        "0000000000000000.0:", "0000000000000000.1:", "0000000000000000.2:"]
    assert "# what executor" in out or "only the job plan is shown" in out
    assert "nothing was started or written" in out
    if "limit_samples=10" in cmd:
        assert doc["config"]["params"]["limit_samples"] == 10 and "'limit_samples': 10" in out
    if "my_results" in cmd:
        assert doc["execution"]["output_dir"] == str(seed_cwd / "my_results")
        assert doc["target"]["api_endpoint"]["model_id"] == "model/another/one"
    if "slurm" in cmd:
        assert doc["execution"]["partition"] == "gpu" and doc["deployment"]["type"] == "vllm"
    if "lepton" in cmd:
        assert doc["execution"]["type"] == "lepton" and "url" not in doc["target"]["api_endpoint"]
    assert sorted(p.name for p in seed_cwd.iterdir()) == before  # writes nothing
    assert not (tmp_path / "home").exists()  # starts nothing


def test_seed_ls_tasks(seed_cwd: Path, tmp_path: Path) -> None:
    r = _run("nv-eval ls tasks", seed_cwd, _env(tmp_path))
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert {"hellaswag", "arc_challenge", "arc_easy", "winogrande", "mmlu", "gsm8k"} <= set(names)
    rj = _run("nv-eval ls tasks --json", seed_cwd, _env(tmp_path))
    import json

    assert {t["name"] for t in json.loads(rj.stdout)} == set(names)
    assert not (tmp_path / "home").exists()


def test_dry_run_never_prints_secret_values(seed_cwd: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["MY_API_KEY"] = "sk-very-secret-value"
    r = _run("nv-eval run --config-dir examples --config-name local_llama_3_1_8b_instruct --dry-run "
             "-o ++target.api_endpoint.api_key_name=MY_API_KEY -o execution.env_names=[MY_API_KEY] "
             "-o '++execution.env={HF_TOKEN: hf-secret-in-config, LOG_LEVEL: debug}'", seed_cwd, env)
    assert r.returncode == 0, r.stderr
    assert "sk-very-secret-value" not in r.stdout + r.stderr
    assert "hf-secret-in-config" not in r.stdout + r.stderr
    assert "MY_API_KEY" in r.stdout and "LOG_LEVEL: debug" in r.stdout
