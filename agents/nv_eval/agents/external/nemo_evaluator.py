"""NVIDIA NeMo Evaluator containers: the ``nemo-evaluator run_eval`` command and ``results.yml``.

Command (the documented CLI; older images name it ``eval-factory``): ``nemo-evaluator
run_eval --eval_type T --model_id M --model_url URL --model_type chat|completions
--output_dir DIR [--api_key_name NAME] [--overrides config.params.limit_samples=N,...]``.
The API key travels by NAME (``--api_key_name``).

Output: ``<output_dir>/results.yml``, an ``EvaluationResult``: ``results.tasks.<task>.metrics.
<metric>.scores.<score>.value`` with ``stats.stderr`` (and ``stats.count``), the same under
``results.groups``. A metric with one score named like the metric becomes ``<metric>``,
others ``<metric>.<score>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from nv_eval.protocol import JobSpec, Metric, Results

from ._common import as_float, make_results

COMMAND = "nemo-evaluator"


def nemo_evaluator_command(job: JobSpec, *, endpoint_url: str, output_dir: str) -> list[str]:
    p = job.params
    cmd = [COMMAND, "run_eval", "--eval_type", job.task.harness_task or job.task.name,
           "--model_id", job.endpoint.model_id, "--model_url", endpoint_url,
           "--model_type", job.endpoint.type, "--output_dir", output_dir]  # fmt: skip
    if job.endpoint.api_key_name:
        cmd += ["--api_key_name", job.endpoint.api_key_name]
    overrides: list[str] = []
    for field, name in (("limit_samples", "limit_samples"), ("parallelism", "parallelism"),
                        ("request_timeout", "request_timeout"), ("max_retries", "max_retries"),
                        ("temperature", "temperature"), ("top_p", "top_p"), ("max_new_tokens", "max_new_tokens")):  # fmt: skip
        v = getattr(p, field)
        if v is not None:
            overrides.append(f"config.params.{name}={v}")
    for k, v in sorted(p.extra.items()):
        overrides.append(f"config.params.extra.{k}={v}")
    if p.num_fewshot is not None:
        overrides.append(f"config.params.extra.num_fewshot={p.num_fewshot}")
    if overrides:
        cmd += ["--overrides", ",".join(overrides)]
    return cmd


def _metrics(block: dict[str, Any]) -> tuple[dict[str, Metric], int]:
    out: dict[str, Metric] = {}
    count = 0
    for mname, mdata in (block.get("metrics") or {}).items():
        scores = (mdata or {}).get("scores") or {}
        for sname, s in scores.items():
            v = as_float((s or {}).get("value"))
            if v is None:
                continue
            stats = (s or {}).get("stats") or {}
            label = mname if (len(scores) == 1 or sname == mname) else f"{mname}.{sname}"
            out[label] = Metric(value=v, stderr=as_float(stats.get("stderr")))
            c = stats.get("count")
            if isinstance(c, int):
                count = max(count, c)
    return out, count


def parse_nemo_evaluator(job: JobSpec, output_dir: Path) -> Results:
    path = output_dir / "results.yml"
    if not path.exists():
        found = sorted(output_dir.rglob("results.yml"))
        if not found:
            raise ValueError(f"nemo-evaluator: no results.yml under {output_dir}")
        path = found[0]
    doc = yaml.safe_load(path.read_text()) or {}
    res = doc.get("results", doc)
    tasks: dict[str, Any] = res.get("tasks") or {}
    groups_doc: dict[str, Any] = res.get("groups") or {}
    name = job.task.harness_task or job.task.name
    main = groups_doc.get(name) or tasks.get(name)
    if main is None and len(tasks) == 1:
        main = next(iter(tasks.values()))
    if main is None:
        raise ValueError(f"nemo-evaluator: task {name!r} not in {path} (found: {', '.join(tasks) or 'none'})")
    metrics, count = _metrics(main)
    subtasks = {k: _metrics(v)[0] for k, v in tasks.items() if v is not main}
    groups = {k: _metrics(v)[0] for k, v in groups_doc.items() if v is not main}
    limit = job.params.limit_samples
    target = (doc.get("target") or {}).get("api_endpoint") or {}
    return make_results(
        job,
        harness="nemo-evaluator",
        version=str((doc.get("config") or {}).get("framework_version") or doc.get("git_hash") or "unknown"),
        metrics=metrics,
        n_samples=count or (limit or 0),
        subtasks=subtasks,
        groups=groups,
        endpoint_url=str(target.get("url") or ""),
    )
