"""A real, small stand-in for ``nv-eval-harness run`` used by the agent tests.

Speaks the harness command contract (docs/contracts.md): progress JSON lines on stdout,
log lines on stderr, ``results.json`` in ``--output-dir``, exit codes 0/2/3. Behaviour is
steered by ``--params-json '{"extra": {...}}'``: ``steps`` (progress lines), ``step_s``
(sleep per step), ``exit`` (exit code), ``probe`` (GET ``/v1/models`` first; exit 3 if it fails). Every start appends a line to ``launches.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--task", required=True)
    p.add_argument("--model-id", required=True)
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--endpoint-type", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--api-key-env")
    p.add_argument("--params-json", default="{}")
    a = p.parse_args()
    extra = json.loads(a.params_json).get("extra", {})
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "launches.txt").open("a") as f:
        f.write(f"{os.getpid()}\n")
    steps = int(extra.get("steps", 5))
    step_s = float(extra.get("step_s", 0.05))
    key = os.environ.get(a.api_key_env or "", "")
    print(f"starting {a.task} against {a.endpoint_url} (key set: {bool(key)})", file=sys.stderr, flush=True)
    if extra.get("probe"):  # like the real harness: the endpoint must answer /v1/models
        import urllib.request

        base = a.endpoint_url.split("/v1")[0]
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
                print(f"probe ok: {r.status}", file=sys.stderr, flush=True)
        except OSError as e:
            print(f"probe failed: {e}", file=sys.stderr, flush=True)
            return 3
    for i in range(1, steps + 1):
        time.sleep(step_s)
        print(json.dumps({"event": "progress", "done": i, "total": steps, "rps": 10.0, "eta_s": 0.1}), flush=True)
        print(f"step {i}/{steps}", file=sys.stderr, flush=True)
    code = int(extra.get("exit", 0))
    if code:
        print(f"fatal: stand-in failure with code {code}", file=sys.stderr, flush=True)
        return code
    results = {
        "task": a.task,
        "metrics": {"acc": {"value": 0.5, "stderr": 0.1}},
        "n_samples": steps,
        "mode": "loglikelihood",
        "model_id": a.model_id,
        "endpoint_url": a.endpoint_url,
        "endpoint_type": a.endpoint_type,
        "harness": "stand-in",
        "harness_version": "0",
    }
    (out / "results.json").write_text(json.dumps(results))
    print(json.dumps({"event": "done", "results": str(out / "results.json")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
