"""Bad input to ``nv-eval-harness``: one-line error on stderr, exit 2, nothing started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
# an address nothing listens on: bad input must be rejected before any connection is tried
DEAD_URL = "http://127.0.0.1:9/v1"


def run(tmp_path: Path, *extra: str, task: str = "arc_challenge") -> subprocess.CompletedProcess[str]:
    cmd = [HARNESS, "run", "--task", task, "--model-id", "m", "--endpoint-url", DEAD_URL,
           "--endpoint-type", "completions", "--output-dir", str(tmp_path / "out"), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def one_line_exit2(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ('{"limit_samples": 0}', "limit_samples"),
        ('{"temperature": -1}', "temperature"),
        ('{"top_p": 2}', "top_p"),
        ('{"num_fewshot": "five"}', "num_fewshot"),
        ('{"bogus": 1}', "bogus"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_params_exit_2(tmp_path: Path, params: str, needle: str) -> None:
    one_line_exit2(run(tmp_path, "--params-json", params), "--params-json", needle)


def test_unknown_task(tmp_path: Path) -> None:
    one_line_exit2(run(tmp_path, task="nope"), "unknown task 'nope'")


def test_bad_endpoint_type(tmp_path: Path) -> None:
    p = subprocess.run([HARNESS, "run", "--task", "arc_easy", "--model-id", "m", "--endpoint-url", DEAD_URL,
                        "--endpoint-type", "embeddings", "--output-dir", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    one_line_exit2(p, "--endpoint-type")


def test_missing_data_dir(tmp_path: Path) -> None:
    one_line_exit2(run(tmp_path, "--data-dir", str(tmp_path / "nowhere")), "--data-dir")


def test_corrupt_arrow_file(tmp_path: Path) -> None:
    split = tmp_path / "data" / "ai2_arc" / "ARC-Challenge" / "validation"
    split.mkdir(parents=True)
    (split / "data-00000-of-00001.arrow").write_bytes(b"this is not arrow data at all")
    one_line_exit2(run(tmp_path, "--data-dir", str(tmp_path / "data")), "unreadable")


def test_missing_split(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    one_line_exit2(run(tmp_path, "--data-dir", str(tmp_path / "data")), "no .arrow files")


def test_bad_task_file(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(
        json.dumps({"question": "q?", "choices": ["a", "b"], "answer": 0})
        + "\n"
        + '{"question": "x", "choices": ["only"], "answer": 0}\n'
    )
    one_line_exit2(run(tmp_path, "--task-file", str(f), task="mine"), "line 2", "choices")
    f.write_text('{"question": "q?", "choices": ["a", "b"], "answer": 5}\n')
    one_line_exit2(run(tmp_path, "--task-file", str(f), task="mine"), "answer")


def test_unset_api_key_env(tmp_path: Path) -> None:
    one_line_exit2(run(tmp_path, "--api-key-env", "NV_EVAL_SURELY_UNSET_VAR_X"), "NV_EVAL_SURELY_UNSET_VAR_X")


def test_unreachable_endpoint_exit_3(tmp_path: Path) -> None:
    p = run(tmp_path, "--params-json", '{"limit_samples": 1}')
    assert p.returncode == 3, p.stderr
    assert len(p.stderr.strip().splitlines()) == 2 and "unusable" in p.stderr  # log line + error line
    assert "Traceback" not in p.stderr


def test_ls_json() -> None:
    p = subprocess.run([HARNESS, "ls", "--json"], capture_output=True, text=True, check=True)
    names = {t["name"] for t in json.loads(p.stdout)}
    assert {"arc_challenge", "arc_easy", "hellaswag", "winogrande", "mmlu", "gsm8k"} <= names
