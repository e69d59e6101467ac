"""Local exporters: results.json documents of an invocation's jobs -> JSON / CSV with stderr."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import msgspec
import pytest
from nv_eval.client import NvEvalError, collect_results, export_invocation, to_csv
from nv_eval.protocol import InvocationRecord, JobRecord, Metric, Results

INV = "0123456789abcdef"


def _inv(tmp_path: Path, metrics: dict[str, dict[str, Metric] | None]) -> InvocationRecord:
    jobs = []
    for i, (task, ms) in enumerate(metrics.items()):
        d = tmp_path / INV / task
        d.mkdir(parents=True)
        if ms is not None:
            res = Results(task=task, metrics=ms, n_samples=10, mode="loglikelihood", model_id="smol",
                          endpoint_url="http://x/v1", endpoint_type="completions", harness="builtin", harness_version="1")
            (d / "results.json").write_bytes(msgspec.json.encode(res))
        jobs.append(JobRecord(job_id=f"{INV}.{i}", invocation_id=INV, index=i, task=task, executor="local",
                              state="succeeded" if ms is not None else "failed", task_dir=str(d)))
    return InvocationRecord(invocation_id=INV, state="succeeded", executor="local", model_id="smol",
                            output_dir=str(tmp_path), created_at=0.0, jobs=jobs)


def test_json_and_csv(tmp_path: Path) -> None:
    inv = _inv(tmp_path, {
        "arc_challenge": {"acc": Metric(0.25, 0.02), "acc_norm": Metric(0.3, 0.021)},
        "winogrande": {"acc": Metric(0.5, None)},
    })
    path, warnings = export_invocation(inv, "json", None)
    assert warnings == []
    assert path == str(tmp_path / INV / "export" / "results.json")
    doc = json.loads(Path(path).read_text())
    assert doc == {
        "invocation": INV,
        "model": "smol",
        "tasks": {
            "arc_challenge": {"acc": {"value": 0.25, "stderr": 0.02}, "acc_norm": {"value": 0.3, "stderr": 0.021}},
            "winogrande": {"acc": {"value": 0.5, "stderr": None}},
        },
    }
    out = tmp_path / "x.csv"
    export_invocation(inv, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1
    r = rows[0]
    assert r["invocation"] == INV and r["model"] == "smol"
    assert float(r["arc_challenge_acc"]) == 0.25 and float(r["arc_challenge_acc_stderr"]) == 0.02
    assert float(r["arc_challenge_acc_norm_stderr"]) == 0.021
    assert r["winogrande_acc"] == "0.5" and r["winogrande_acc_stderr"] == ""


def test_missing_results_warn_and_none_fail(tmp_path: Path) -> None:
    inv = _inv(tmp_path, {"arc_challenge": {"acc": Metric(0.25, 0.02)}, "hellaswag": None})
    doc, warnings = collect_results(inv)
    assert list(doc["tasks"]) == ["arc_challenge"]
    assert len(warnings) == 1 and "hellaswag" in warnings[0]
    assert "hellaswag" not in to_csv(doc)
    empty = _inv(tmp_path / "e", {"gsm8k": None})
    with pytest.raises(NvEvalError, match="0 of 1 job"):
        export_invocation(empty, "json", None)
    assert not (tmp_path / "e" / INV / "export").exists()


def test_stdout_target(tmp_path: Path) -> None:
    inv = _inv(tmp_path, {"gsm8k": {"exact_match": Metric(0.1, 0.01)}})
    text, _ = export_invocation(inv, "csv", "-")
    assert text.splitlines()[0] == "invocation,model,gsm8k_exact_match,gsm8k_exact_match_stderr"
    assert not (tmp_path / INV / "export").exists()
