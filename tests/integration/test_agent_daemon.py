"""The process agent behind the real daemon and CLI: `nv-eval kill` stops the job processes within 5 s.

Real nats-server, real daemon and agent processes, the stand-in harness script as the job
(so the test is about the agent and the bus, not about model speed).
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

from ._agent_helpers import STAND_IN_CMD, pid_alive


def _nv(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nv_eval.client.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture()
def stack(nats_url: str, prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
    procs = []
    for name, mod, extra, env in (
        ("daemon", "nv_eval.daemon", [], base),
        ("agent", "nv_eval.agents", ["--executor", "local"], {**base, "NV_EVAL_HARNESS_CMD": STAND_IN_CMD}),
    ):
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", mod, *extra, "--nats-url", nats_url, "--prefix", prefix,
                 "--data-dir", str(tmp_path / name)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        )
    client_env = {**base, "NV_EVAL_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                  "NV_EVAL_NATS_URL": nats_url, "NV_EVAL_PREFIX": prefix, "NO_COLOR": "1"}  # fmt: skip
    try:
        yield client_env
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_kill_through_the_daemon_stops_processes_within_5s(stack: dict[str, str], tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    (cwd / "cfg").mkdir(parents=True)
    (cwd / "cfg" / "slow.yaml").write_text("""\
defaults:
  - execution: local
  - deployment: none
  - _self_
execution:
  runtime: process
  output_dir: ./results
target:
  api_endpoint:
    url: http://127.0.0.1:9/v1/completions
    model_id: stand-in
config:
  params:
    extra: {steps: 10000, step_s: 0.1}
evaluation:
  tasks:
    - name: arc_easy
    - name: hellaswag
""")
    deadline = time.monotonic() + 60
    while True:  # the daemon needs a moment to come up
        r = _nv(["run", "--config-dir", "cfg", "--config-name", "slow"], cwd, stack)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.returncode == 0, r.stderr
    inv_id = r.stdout.strip().splitlines()[0]
    launches = sorted((cwd / "results" / inv_id).glob("*/launches.txt"))
    while True:
        st = json.loads(_nv(["status", inv_id, "--json"], cwd, stack).stdout)["invocation"]
        launches = sorted((cwd / "results" / inv_id).glob("*/launches.txt"))
        if all(j["state"] == "running" for j in st["jobs"]) and len(launches) == 2:
            break
        assert time.monotonic() < deadline, (st, (tmp_path / "agent.log").read_text()[-3000:])
        time.sleep(0.2)
    pids = [int(p.read_text().split()[0]) for p in launches]
    assert all(pid_alive(p) for p in pids)
    t0 = time.monotonic()
    k = _nv(["kill", inv_id], cwd, stack)
    assert k.returncode == 0, k.stderr
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() - t0 < 5, "job processes still alive 5 s after kill"
        time.sleep(0.05)
    while True:
        st = json.loads(_nv(["status", inv_id, "--json"], cwd, stack).stdout)["invocation"]
        if all(j["state"] == "killed" for j in st["jobs"]):
            break
        assert time.monotonic() - t0 < 10, st
        time.sleep(0.1)
    agent_log = (tmp_path / "agent.log").read_text()
    assert agent_log.count('"cancel requested"') + agent_log.count('"cancel found in the cancel bucket"') >= 2
