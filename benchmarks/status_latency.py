"""CLI latency: ``nv-eval status <id>`` on an invocation of 100 jobs, wall time including start-up.

Starts a real nats-server and the real daemon (no agent: the 100 jobs stay queued), submits
one invocation of 100 tasks, then runs the CLI as a fresh process N times and reports the
median, the share of start-up spent importing (``python -X importtime``), a bare-Python
baseline, and ``nv-eval ls tasks`` for comparison.

    .venv/bin/python benchmarks/status_latency.py [--runs 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nv_eval.client import _fastnats  # noqa: E402
from nv_eval.protocol import (  # noqa: E402
    ApiEndpoint,
    ApiError,
    EvaluationConfig,
    LocalExecution,
    RunConfig,
    RunReply,
    RunRequest,
    TargetConfig,
    TaskConfig,
    decode,
    encode,
    load_registry,
)

from tests._support.services import start_nats  # noqa: E402

PREFIX = "bench"


def _wall(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def _import_share(cmd_args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(total import time of the CLI's modules, wall of that run) in seconds, from -X importtime."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nv_eval.client.cli", *cmd_args], env=env,
                       capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    total = 0
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):  # top-level imports only (cumulative)
            total += int(m.group(1))
    return total / 1e6, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=100)
    a = ap.parse_args()
    import os

    with tempfile.TemporaryDirectory() as tmp:
        nats = start_nats(Path(tmp) / "nats")
        daemon = subprocess.Popen([sys.executable, "-m", "nv_eval.daemon", "--nats-url", nats.url, "--prefix", PREFIX,
                                   "--data-dir", f"{tmp}/daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    _fastnats.request(nats.url, f"{PREFIX}.api.list_tasks", b"{}", 1)
                    break
                except (_fastnats.NoResponders, TimeoutError, OSError):
                    if time.monotonic() > deadline:
                        raise SystemExit("daemon did not start") from None
                    time.sleep(0.1)
            reg = load_registry()
            names = ["arc_challenge", "hellaswag", "winogrande", "mmlu", "gsm8k"]
            tasks = [TaskConfig(name=names[i % len(names)]) for i in range(a.jobs)]
            cfg = RunConfig(
                execution=LocalExecution(runtime="process", output_dir=f"{tmp}/results"),
                target=TargetConfig(api_endpoint=ApiEndpoint(url="http://127.0.0.1:9/v1/completions", model_id="m")),
                evaluation=EvaluationConfig(tasks=tasks),
            )
            req = RunRequest(config=cfg, tasks=[reg[t.name] for t in tasks])
            reply = decode(_fastnats.request(nats.url, f"{PREFIX}.api.run", encode(req), 30), RunReply | ApiError)
            if isinstance(reply, ApiError):
                raise SystemExit(f"run refused: {reply.message}")
            inv = reply.invocation.invocation_id
            env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
            env.update(NV_EVAL_NATS_URL=nats.url, NV_EVAL_PREFIX=PREFIX, NV_EVAL_HOME=f"{tmp}/home")
            cli = [sys.executable, "-m", "nv_eval.client.cli"]
            check = subprocess.run([*cli, "status", inv, "--json"], env=env, capture_output=True, text=True)
            assert check.returncode == 0 and check.stdout.count('"job_id"') == a.jobs, check.stderr
            _wall(cli + ["status", inv], env, 2)  # warm the page cache
            base = _wall([sys.executable, "-c", "pass"], env, a.runs)
            status = _wall([*cli, "status", inv], env, a.runs)
            status_json = _wall([*cli, "status", inv, "--json"], env, a.runs)
            ls_tasks = _wall([*cli, "ls", "tasks"], env, a.runs)
            imports, iwall = _import_share(["status", inv], env)
        finally:
            daemon.terminate()
            daemon.wait(10)
            nats.stop()

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    print(f"invocation of {a.jobs} jobs, {a.runs} runs each (median wall, ms)")
    print(f"  python -c pass            {med(base):7.1f}")
    print(f"  nv-eval status <id>       {med(status):7.1f}   (p90 {sorted(status)[int(0.9 * len(status)) - 1] * 1000:.1f})")
    print(f"  nv-eval status <id> --json{med(status_json):7.1f}")
    print(f"  nv-eval ls tasks          {med(ls_tasks):7.1f}")
    print(f"  imports in one status run {imports * 1000:7.1f} of {iwall * 1000:.1f} wall ({imports / iwall:.0%})")


if __name__ == "__main__":
    main()
