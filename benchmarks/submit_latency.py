"""Submit-to-running: from ``run`` returning to the job's ``running`` status event.

Starts a real nats-server, the real daemon and a real local agent (``--executor local``),
then N times submits one process-runtime job (arc_easy, limit_samples 1) through the SDK
(``nv_eval.client.Client``) and times, from the moment ``Client.run`` returned, the arrival
of the job's ``dispatched`` and ``running`` status events on the events stream (one
subscription opened before the first submission, receive time taken in its callback). The
endpoint does not answer: the harness fails at its probe afterwards, which is outside the
measurement; each invocation is killed (or has ended) before the next submission.

Second figure: ``nv-eval run`` as a fresh process, from its start until it prints the
invocation id, and from its start until that job's ``running`` event.

    .venv/bin/python benchmarks/submit_latency.py [--runs 20] [--cli-runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.js.api import DeliverPolicy  # noqa: E402
from nv_eval.client import Client, _fastnats  # noqa: E402
from nv_eval.protocol import (  # noqa: E402
    ApiEndpoint,
    EvaluationConfig,
    Event,
    LocalExecution,
    RunConfig,
    StatusEvent,
    TargetConfig,
    TaskConfig,
    TaskParams,
    decode,
)

from tests._support.services import start_nats  # noqa: E402

PREFIX = "benchsub"
DEAD_URL = "http://127.0.0.1:9/v1/completions"  # nothing listens: not needed until after `running`
TERMINAL = ("succeeded", "failed", "killed", "lost")


@dataclass
class Arrivals:
    """perf_counter() at which each (job_id, state) status event reached this process."""

    at: dict[tuple[str, str], float] = field(default_factory=dict)
    ts: dict[tuple[str, str], float] = field(default_factory=dict)

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, StatusEvent):
            self.at.setdefault((ev.job_id, ev.state), time.perf_counter())
            self.ts.setdefault((ev.job_id, ev.state), ev.ts)

    async def wait(self, job_id: str, states: tuple[str, ...], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in states:
                if (job_id, s) in self.at:
                    return self.at[(job_id, s)]
            await asyncio.sleep(0.002)
        raise TimeoutError(f"{job_id}: none of {states} within {timeout}s")


def _wait_daemon(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _fastnats.request(url, f"{PREFIX}.api.list_tasks", b"{}", 1)
            return
        except (_fastnats.NoResponders, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit("daemon did not answer") from None
            time.sleep(0.1)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def _line(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return (f"  {name:<44} median {statistics.median(ms):7.1f} ms   p90 {_pct(ms, 0.9):7.1f}   "
            f"min {min(ms):7.1f}   max {max(ms):7.1f}   (n={len(ms)})")  # fmt: skip


async def _settle(client: Client, arr: Arrivals, job_id: str, inv_id: str) -> None:
    """Kill the invocation unless its job already ended; wait (bounded) for the terminal event."""
    if not any((job_id, s) in arr.at for s in TERMINAL):
        try:
            await client.kill(inv_id)
        except Exception as e:  # noqa: BLE001 - the job may have ended in between
            print(f"  (kill {inv_id}: {type(e).__name__}: {e})")
    try:
        await arr.wait(job_id, TERMINAL, 20)
    except TimeoutError:
        print(f"  ({job_id} not terminal 20 s after kill)")


def _cli_config(cwd: Path, out: Path) -> None:
    (cwd / "cfg").mkdir(parents=True, exist_ok=True)
    (cwd / "cfg" / "bench.yaml").write_text(f"""\
defaults:
  - execution: local
  - deployment: none
  - _self_
execution:
  runtime: process
  output_dir: {out}
target:
  api_endpoint:
    url: {DEAD_URL}
    model_id: m
config:
  params:
    limit_samples: 1
evaluation:
  tasks:
    - name: arc_easy
""")


async def _measure(nats_url: str, tmp: str, runs: int, cli_runs: int) -> dict[str, list[float]]:
    client = await Client.connect(nats_url, PREFIX, timeout=30)
    arr = Arrivals()
    js = client._nc.jetstream()

    async def cb(msg: Any) -> None:
        try:
            arr.on_event(decode(msg.data, Event))
        except Exception:  # noqa: BLE001 - not an event of ours
            pass

    sub = await js.subscribe(f"{PREFIX}.events.>", cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    cfg = RunConfig(
        execution=LocalExecution(runtime="process", output_dir=f"{tmp}/results"),
        target=TargetConfig(api_endpoint=ApiEndpoint(url=DEAD_URL, model_id="m")),
        evaluation=EvaluationConfig(tasks=[TaskConfig(name="arc_easy", params=TaskParams(limit_samples=1))]),
    )
    res: dict[str, list[float]] = {"running": [], "dispatched": [], "ts_running": [], "cli_id": [], "cli_running": []}
    try:
        for i in range(runs + 1):  # the first round warms the agent (imports, consumer) and is dropped
            inv = await client.run(cfg)
            t_reply, wall_reply = time.perf_counter(), time.time()
            job = inv.jobs[0].job_id
            t_run = await arr.wait(job, ("running",), 60)
            t_disp = arr.at.get((job, "dispatched"), t_reply)
            if i:
                res["running"].append(t_run - t_reply)
                res["dispatched"].append(max(0.0, t_disp - t_reply))
                res["ts_running"].append(arr.ts[(job, "running")] - wall_reply)
            await _settle(client, arr, job, inv.invocation_id)

        cwd = Path(tmp) / "cwd"
        _cli_config(cwd, Path(tmp) / "cli-results")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
        env.update(NV_EVAL_NATS_URL=nats_url, NV_EVAL_PREFIX=PREFIX, NV_EVAL_HOME=f"{tmp}/home",
                   XDG_CONFIG_HOME=f"{tmp}/xdg", NO_COLOR="1")  # fmt: skip
        cmd = [sys.executable, "-m", "nv_eval.client.cli", "run", "--config-dir", "cfg", "--config-name", "bench"]
        for _ in range(cli_runs):
            t0 = time.perf_counter()
            p = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)  # fmt: skip
            assert p.stdout is not None and p.stderr is not None
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            t_id = time.perf_counter()
            _, err = await asyncio.wait_for(p.communicate(), 30)
            inv_id = line.decode().strip()
            if p.returncode != 0 or len(inv_id) != 16:
                raise SystemExit(f"nv-eval run failed ({p.returncode}): {err.decode()[-500:]}")
            job = f"{inv_id}.0"
            t_run = await arr.wait(job, ("running",), 60)
            res["cli_id"].append(t_id - t0)
            res["cli_running"].append(t_run - t0)
            await _settle(client, arr, job, inv_id)
    finally:
        await sub.unsubscribe()
        await client.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cli-runs", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats = start_nats(Path(tmp) / "nats")
        procs: list[subprocess.Popen[bytes]] = []
        logs = [open(f"{tmp}/{n}.log", "wb") for n in ("daemon", "agent")]  # noqa: SIM115
        try:
            common = ["--nats-url", nats.url, "--prefix", PREFIX]
            procs.append(subprocess.Popen([sys.executable, "-m", "nv_eval.daemon", *common, "--data-dir",
                                           f"{tmp}/daemon"], stdout=logs[0], stderr=subprocess.STDOUT))  # fmt: skip
            _wait_daemon(nats.url, 30)
            env = {k: v for k, v in os.environ.items() if k != "NV_EVAL_HARNESS_CMD"}  # the real harness
            procs.append(subprocess.Popen([sys.executable, "-m", "nv_eval.agents", "--executor", "local", *common,
                                           "--data-dir", f"{tmp}/agent"], stdout=logs[1], stderr=subprocess.STDOUT,
                                          env=env))  # fmt: skip
            res = asyncio.run(_measure(nats.url, tmp, a.runs, a.cli_runs))
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            nats.stop()
            for f in logs:
                f.close()

    load = os.getloadavg()[0]
    print(f"submit to running, process runtime, 1 job (arc_easy, limit_samples 1); load average {load:.1f}")
    print(_line("Client.run returned -> `running` received", res["running"]))
    print(_line("Client.run returned -> `dispatched` received", res["dispatched"]))
    print(_line("Client.run returned -> `running` (event ts)", res["ts_running"]))
    share = [d / r for d, r in zip(res["dispatched"], res["running"], strict=True) if r > 0]
    print(f"  share before `dispatched`: median {statistics.median(share):.0%}")
    if res["cli_id"]:
        print(_line("`nv-eval run` start -> id printed", res["cli_id"]))
        print(_line("`nv-eval run` start -> `running` received", res["cli_running"]))


if __name__ == "__main__":
    main()
