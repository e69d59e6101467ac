"""Scores against the real SmolLM2 endpoint equal a direct ``llama_cpp.Llama`` computation:
per-choice loglikelihoods within 1e-4 for ARC-Challenge, WinoGrande and HellaSwag items, and
acc / acc_norm / stderr follow from them by lm-evaluation-harness's definitions. Also the
generative (chat) mode and gsm8k end to end, and the outputs of the command contract."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._support.services import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from accuracy_reference import Reference  # noqa: E402

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def harness(svc: Service, out: Path, task: str, etype: str, params: dict[str, Any]) -> dict[str, Any]:
    p = subprocess.run(
        [HARNESS, "run", "--task", task, "--model-id", svc.extra["model_id"], "--endpoint-url", svc.url,
         "--endpoint-type", etype, "--output-dir", str(out), "--params-json", json.dumps(params)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert events[-1] == {"event": "done", "results": str(out / "results.json")}
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"]
    assert (out / "progress.jsonl").read_text().count("\n") == len(progress)
    return json.loads((out / "results.json").read_text())


def samples(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def lm_eval_stderr(xs: list[float]) -> float:
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))


@pytest.mark.parametrize(("task", "limit"), [("arc_challenge", 3), ("winogrande", 2), ("hellaswag", 1)])
def test_loglikelihoods_equal_direct_llama(
    smollm2: Service, reference: Reference, tmp_path: Path, task: str, limit: int
) -> None:
    res = harness(smollm2, tmp_path, task, "completions", {"limit_samples": limit, "parallelism": 2})
    assert res["mode"] == "loglikelihood" and res["n_samples"] == limit and res["task"] == task
    rows = samples(tmp_path)
    assert len(rows) == limit
    accs, norms = [], []
    for s in rows:
        ctxs = s["prompt"] if isinstance(s["prompt"], list) else [s["prompt"]] * len(s["choices"])
        direct = [reference.loglikelihood(c, cont) for c, cont in zip(ctxs, s["choices"], strict=True)]
        for got, want in zip(s["logprobs"], direct, strict=True):
            assert abs(got - want) < 1e-4, (s["id"], got, want)
        pred = argmax(direct)
        assert s["prediction"] == pred and s["correct"] == (pred == s["gold"])
        accs.append(float(pred == s["gold"]))
        if task != "winogrande":  # lm-eval: acc_norm divides by the choice's length in characters
            lengths = [len(c) - 1 for c in s["choices"]]  # continuation = " " + choice
            norms.append(float(argmax([d / n for d, n in zip(direct, lengths, strict=True)]) == s["gold"]))
    assert res["metrics"]["acc"]["value"] == pytest.approx(sum(accs) / len(accs))
    if limit > 1:
        assert res["metrics"]["acc"]["stderr"] == pytest.approx(lm_eval_stderr(accs))
    if task == "winogrande":
        assert set(res["metrics"]) == {"acc"}
    else:
        assert res["metrics"]["acc_norm"]["value"] == pytest.approx(sum(norms) / len(norms))
    assert res["usage"]["requests"] >= sum(len(s["choices"]) for s in rows)
    assert res["timings"]["duration_s"] > 0


def test_generative_chat_mode(smollm2: Service, tmp_path: Path) -> None:
    res = harness(smollm2, tmp_path, "arc_easy", "chat", {"limit_samples": 2, "max_new_tokens": 8, "parallelism": 2})
    assert res["mode"] == "generative" and set(res["metrics"]) == {"acc"}
    rows = samples(tmp_path)
    assert [set(r) >= {"id", "prompt", "choices", "response", "prediction", "correct"} for r in rows] == [True, True]
    assert res["metrics"]["acc"]["value"] == sum(r["correct"] for r in rows) / 2
    assert all(r["prompt"][-1]["content"].rstrip().endswith(f"D. {r['choices'][3]}") for r in rows)


def test_gsm8k_generative_completions(smollm2: Service, tmp_path: Path) -> None:
    res = harness(smollm2, tmp_path, "gsm8k", "completions", {"limit_samples": 1, "max_new_tokens": 24})
    assert res["mode"] == "generative"
    assert set(res["metrics"]) == {"exact_match_strict", "exact_match_flexible"}
    row = samples(tmp_path)[0]
    assert row["gold"] == "18" and isinstance(row["response"], str) and row["response"]
