"""Accuracy benchmark: nv-eval-harness loglikelihood scores on a real SmolLM2 endpoint
(llama_cpp.server with the BOS override) versus a direct in-process ``llama_cpp.Llama``
computation of log P(continuation | BOS + context), for the first N ARC-Challenge, WinoGrande
and HellaSwag validation items (0-shot). Prints the max abs difference and the accuracies.

    .venv/bin/python benchmarks/accuracy_vs_llamacpp.py --arc 40 --winogrande 20 --hellaswag 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy_reference import Reference  # noqa: E402

from tests._support.services import start_smollm2  # noqa: E402

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def run_task(url: str, model: str, task: str, n: int, out: Path) -> tuple[dict, list[dict], float]:
    t0 = time.monotonic()
    cmd = [HARNESS, "run", "--task", task, "--model-id", model, "--endpoint-url", url, "--endpoint-type",
           "completions", "--output-dir", str(out), "--params-json", json.dumps({"limit_samples": n, "parallelism": 2})]  # fmt: skip
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode:
        raise SystemExit(f"harness failed on {task}: {p.stderr.strip().splitlines()[-1]}")
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return json.loads((out / "results.json").read_text()), rows, time.monotonic() - t0


def compare(ref: Reference, task: str, res: dict, rows: list[dict]) -> dict:
    max_diff = 0.0
    acc, norm, same_pred = [], [], 0
    for s in rows:
        ctxs = s["prompt"] if isinstance(s["prompt"], list) else [s["prompt"]] * len(s["choices"])
        direct = [ref.loglikelihood(c, k) for c, k in zip(ctxs, s["choices"], strict=True)]
        max_diff = max(max_diff, *(abs(a - b) for a, b in zip(s["logprobs"], direct, strict=True)))
        pred = argmax(direct)
        same_pred += pred == s["prediction"]
        acc.append(pred == s["gold"])
        if task != "winogrande":
            norm.append(argmax([d / (len(k) - 1) for d, k in zip(direct, s["choices"], strict=True)]) == s["gold"])
    out = {
        "task": task, "n": len(rows), "requests": sum(len(s["choices"]) for s in rows), "max_abs_diff": max_diff,
        "same_predictions": same_pred, "harness": {k: v["value"] for k, v in res["metrics"].items()},
        "direct": {"acc": sum(acc) / len(acc), **({"acc_norm": sum(norm) / len(norm)} if norm else {})},
        "notes": res.get("notes", []),
    }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arc", type=int, default=40)
    ap.add_argument("--winogrande", type=int, default=20)
    ap.add_argument("--hellaswag", type=int, default=10)
    ap.add_argument("--out", default=None, help="keep outputs here (default: a temporary directory)")
    a = ap.parse_args()
    base = Path(a.out or tempfile.mkdtemp(prefix="acc-llamacpp-"))
    wanted = [
        (t, n) for t, n in (("arc_challenge", a.arc), ("winogrande", a.winogrande), ("hellaswag", a.hellaswag)) if n > 0
    ]
    summary = []
    svc = None
    try:
        for task, n in wanted:
            out = base / task
            if (out / "results.json").exists():  # reuse a finished run in --out (same N)
                res = json.loads((out / "results.json").read_text())
                rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
                secs = res["timings"]["duration_s"]
            else:
                svc = svc or start_smollm2(base / "server")
                res, rows, secs = run_task(svc.url, svc.extra["model_id"], task, n, out)
            summary.append((task, res, rows, secs))
            print(f"{task}: harness run {secs:.0f}s", file=sys.stderr, flush=True)
    finally:
        if svc is not None:
            svc.stop()
    ref = Reference()
    results = []
    for task, res, rows, secs in summary:
        r = compare(ref, task, res, rows) | {"harness_seconds": round(secs, 1)}
        results.append(r)
        print(
            f"{task:14s} n={r['n']:3d} requests={r['requests']:4d} max|diff|={r['max_abs_diff']:.2e} "
            f"same_pred={r['same_predictions']}/{r['n']} harness={r['harness']} direct={r['direct']}"
        )
    (base / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"summary: {base / 'summary.json'}")


if __name__ == "__main__":
    main()
