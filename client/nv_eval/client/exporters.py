"""Local exporters: read the ``results.json`` documents of an invocation's jobs and write JSON or CSV.

JSON: ``{"invocation": ID, "model": M, "tasks": {task: {metric: {"value": v, "stderr": s}}}}``.
CSV: one row per invocation, columns ``invocation``, ``model``, then ``<task>_<metric>`` and
``<task>_<metric>_stderr`` (the anchor launcher's flattening).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from nv_eval.protocol import InvocationRecord, ProtocolError, Results, decode

from ._errors import NvEvalError


def collect_results(inv: InvocationRecord) -> tuple[dict[str, Any], list[str]]:
    """The export document of an invocation and warnings for jobs without a readable results.json."""
    tasks: dict[str, dict[str, dict[str, float | None]]] = {}
    warnings: list[str] = []
    model = inv.model_id
    for job in sorted(inv.jobs, key=lambda j: j.index):
        path = Path(job.task_dir) / "results.json"
        key = os.path.basename(job.task_dir.rstrip("/")) or job.task
        try:
            res = decode(path.read_bytes(), Results)
        except FileNotFoundError:
            warnings.append(f"job {job.job_id} ({job.task}, {job.state}): no results.json at {path}")
            continue
        except OSError as e:
            warnings.append(f"job {job.job_id} ({job.task}): cannot read {path}: {e.strerror}")
            continue
        except ProtocolError as e:
            warnings.append(f"job {job.job_id} ({job.task}): {path} is not a results document: {e}")
            continue
        model = res.model_id or model
        tasks[key] = {name: {"value": m.value, "stderr": m.stderr} for name, m in res.metrics.items()}
    return {"invocation": inv.invocation_id, "model": model, "tasks": tasks}, warnings


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def to_csv(doc: dict[str, Any]) -> str:
    row: dict[str, Any] = {"invocation": doc["invocation"], "model": doc["model"]}
    for task, metrics in doc["tasks"].items():
        for name, m in metrics.items():
            row[f"{task}_{name}"] = m["value"]
            row[f"{task}_{name}_stderr"] = "" if m["stderr"] is None else m["stderr"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    w.writeheader()
    w.writerow(row)
    return buf.getvalue()


def export_invocation(inv: InvocationRecord, fmt: str, output: str | os.PathLike[str] | None) -> tuple[str, list[str]]:
    """Write the export file (``output`` or ``<output_dir>/<id>/export/results.<fmt>``; ``-`` = stdout text).

    Returns the path written (or the text for ``-``) and the warnings.
    """
    if fmt not in ("json", "csv"):
        raise NvEvalError(f"--format: got {fmt!r}; expected json or csv", exit_code=2)
    doc, warnings = collect_results(inv)
    if not doc["tasks"]:
        first = f"; {warnings[0]}" if warnings else ""
        raise NvEvalError(f"invocation {inv.invocation_id} has no results: 0 of {len(inv.jobs)} job(s) wrote results.json{first}")
    text = to_json(doc) if fmt == "json" else to_csv(doc)
    if output is not None and str(output) == "-":
        return text, warnings
    path = Path(output) if output else Path(inv.output_dir) / inv.invocation_id / "export" / f"results.{fmt}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise NvEvalError(f"cannot write {path}: {e.strerror}") from None
    return str(path), warnings
