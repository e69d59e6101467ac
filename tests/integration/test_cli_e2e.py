"""The CLI end to end on real parts: nats-server, daemon, process agent, the built-in harness
and SmolLM2 behind llama.cpp. run -> status --json -> logs -> export json/csv; kill."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nv_eval.client import _fastnats

pytestmark = pytest.mark.model


def _env(tmp: Path, nats_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
    env.update(NV_EVAL_HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "xdg"), NV_EVAL_NATS_URL=nats_url,
               NV_EVAL_PREFIX=prefix, NO_COLOR="1")
    return env


def nv(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nv_eval.client.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def stack(nats_url: str, prefix: str, tmp_path: Path) -> Iterator[None]:
    """The real daemon and a local process agent on the session's nats-server."""
    procs = []
    for name, mod, extra in (("daemon", "nv_eval.daemon", []), ("agent", "nv_eval.agents", ["--executor", "local"])):
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", mod, *extra, "--nats-url", nats_url, "--prefix", prefix,
             "--data-dir", str(tmp_path / name)], stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _fastnats.request(nats_url, f"{prefix}.api.list_tasks", b"{}", timeout=1)
                break
            except (_fastnats.NoResponders, TimeoutError, OSError):
                assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
                time.sleep(0.1)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _config(cwd: Path, url: str, model: str, limit: int) -> None:
    (cwd / "cfg").mkdir(parents=True, exist_ok=True)
    (cwd / "cfg" / "smol.yaml").write_text(f"""\
defaults:
  - execution: local
  - deployment: none
  - _self_
execution:
  runtime: process
  output_dir: ./results
target:
  api_endpoint:
    url: {url}/completions
    model_id: {model}
config:
  params:
    limit_samples: {limit}
evaluation:
  tasks:
    - name: arc_challenge
    - name: hellaswag
    - name: winogrande
""")


def test_run_status_logs_export(stack: None, smollm2, nats_url: str, prefix: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cwd = tmp_path / "cwd"
    env = _env(tmp_path, nats_url, prefix)
    _config(cwd, smollm2.url, smollm2.extra["model_id"], 4)
    r = nv(["run", "--config-dir", "cfg", "--config-name", "smol", "--follow"], cwd, env)
    assert r.returncode == 0, r.stderr + r.stdout
    inv_id = r.stdout.splitlines()[0].strip()
    assert len(inv_id) == 16

    st = nv(["status", inv_id, "--json"], cwd, env)
    assert st.returncode == 0, st.stderr
    inv = json.loads(st.stdout)["invocation"]
    assert [j["state"] for j in inv["jobs"]] == ["succeeded"] * 3
    assert all(j["metrics"] for j in inv["jobs"])
    assert inv["output_dir"] == str(cwd / "results")  # relative output_dir resolved against the client's cwd

    job_status = nv(["status", f"{inv_id}.1", "--json"], cwd, env)
    assert json.loads(job_status.stdout)["job_id"] == f"{inv_id}.1"

    lg = nv(["logs", f"{inv_id}.0"], cwd, env)
    assert lg.returncode == 0 and "arc_challenge" in lg.stdout, lg.stderr

    ej = nv(["export", inv_id, "--dest", "local", "--format", "json"], cwd, env)
    assert ej.returncode == 0, ej.stderr
    doc = json.loads(Path(ej.stdout.strip()).read_text())
    assert doc["invocation"] == inv_id and set(doc["tasks"]) == {"arc_challenge", "hellaswag", "winogrande"}
    for job in inv["jobs"]:
        for metric, m in job["metrics"].items():
            assert doc["tasks"][job["task"]][metric]["value"] == pytest.approx(m["value"])
            assert "stderr" in doc["tasks"][job["task"]][metric]

    ec = nv(["export", inv_id, "--format", "csv", "--output", "out.csv"], cwd, env)
    assert ec.returncode == 0, ec.stderr
    row = next(csv.DictReader(io.StringIO((cwd / "out.csv").read_text())))
    for job in inv["jobs"]:
        for metric in job["metrics"]:
            assert f"{job['task']}_{metric}" in row and f"{job['task']}_{metric}_stderr" in row

    runs = nv(["ls", "runs", "--since", "1h", "--json"], cwd, env)
    assert inv_id in {i["invocation_id"] for i in json.loads(runs.stdout)}


def test_kill(stack: None, smollm2, nats_url: str, prefix: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cwd = tmp_path / "cwd"
    env = _env(tmp_path, nats_url, prefix)
    _config(cwd, smollm2.url, smollm2.extra["model_id"], 2000)
    r = nv(["run", "--config-dir", "cfg", "--config-name", "smol"], cwd, env)
    assert r.returncode == 0, r.stderr
    inv_id = r.stdout.strip()
    deadline = time.monotonic() + 60
    while True:  # wait until the first job runs
        st = json.loads(nv(["status", inv_id, "--json"], cwd, env).stdout)["invocation"]
        if st["jobs"][0]["state"] == "running":
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.3)
    t0 = time.monotonic()
    k = nv(["kill", inv_id], cwd, env)
    assert k.returncode == 0, k.stderr
    while True:
        st = json.loads(nv(["status", inv_id, "--json"], cwd, env).stdout)["invocation"]
        if all(j["state"] == "killed" for j in st["jobs"]):
            break
        assert time.monotonic() - t0 < 5, st
        time.sleep(0.1)
    fol = nv(["run", "--config-dir", "cfg", "--config-name", "smol", "-o", "evaluation.tasks=[{name: gsm8k}]",
              "-o", "target.api_endpoint.url=http://127.0.0.1:9/v1/completions", "--follow"], cwd, env)
    assert fol.returncode == 1  # a failed job makes --follow exit non-zero
