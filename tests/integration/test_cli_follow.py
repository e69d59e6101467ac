"""Followers end when the invocation ends: ``logs -f``, ``status --watch``, ``run --follow`` (exit 1 on
failure). Real nats-server, daemon, process agent and harness; the endpoint refuses connections,
so the jobs fail fast with an evaluation failure."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.test_cli_e2e import _env, nv, stack  # noqa: F401 - fixture

CONFIG = """\
defaults:
  - execution: local
  - deployment: none
  - _self_
execution:
  runtime: process
  output_dir: ./results
target:
  api_endpoint:
    url: http://127.0.0.1:9/v1/chat/completions
    model_id: nobody
config:
  params:
    limit_samples: 2
    max_retries: 0
evaluation:
  tasks:
    - name: gsm8k
    - name: arc_challenge
"""


def test_followers_end_with_the_invocation(stack: None, nats_url: str, prefix: str, tmp_path: Path) -> None:  # noqa: F811
    cwd = tmp_path / "cwd"
    (cwd / "cfg").mkdir(parents=True)
    (cwd / "cfg" / "bad.yaml").write_text(CONFIG)
    env = _env(tmp_path, nats_url, prefix)

    r = nv(["run", "--config-dir", "cfg", "--config-name", "bad"], cwd, env)
    assert r.returncode == 0, r.stderr
    inv = r.stdout.strip()
    t0 = time.monotonic()
    lg = nv(["logs", inv, "-f"], cwd, env, timeout=180)
    assert lg.returncode == 0, lg.stderr
    assert f"[{inv}.0]" in lg.stdout and f"[{inv}.1]" in lg.stdout  # both jobs' lines, tagged
    st = json.loads(nv(["status", inv, "--json"], cwd, env).stdout)["invocation"]
    assert all(j["state"] == "failed" for j in st["jobs"]), st  # logs -f returned only once they ended
    assert time.monotonic() - t0 < 180

    w = nv(["status", inv, "--watch", "--json"], cwd, env, timeout=30)
    assert w.returncode == 0
    lj = nv(["logs", f"{inv}.0", "--json"], cwd, env)
    lines = [json.loads(x) for x in lj.stdout.splitlines()]
    assert lines and all(x["kind"] == "log" and x["job_id"] == f"{inv}.0" for x in lines)
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)

    f = nv(["run", "--config-dir", "cfg", "--config-name", "bad", "--follow"], cwd, env, timeout=180)
    assert f.returncode == 1, f.stderr
    assert "failed" in f.stdout

