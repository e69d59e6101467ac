"""lm-evaluation-harness in a container: the ``lm_eval`` command and its results file.

Command: ``lm_eval --model local-completions|local-chat-completions --model_args
model=M,base_url=URL,... --tasks T --output_path DIR --log_samples`` plus ``--limit``,
``--num_fewshot``, ``--gen_kwargs``, ``--seed`` from the job's params. The API key, when
the endpoint needs one, is passed by NAME: the shell expands ``$NAME`` inside the
container into ``OPENAI_API_KEY`` (the value never appears in the command).

Output: ``<output_path>/<model name, sanitized>/results_<timestamp>.json`` with
``results[task]["<metric>,<filter>"]``, ``"<metric>_stderr,<filter>"`` (a number or
``"N/A"``), ``groups``, ``n-samples[task].effective``, ``n-shot``, ``lm_eval_version`` and
``total_evaluation_time_seconds``. The newest such file is parsed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from nv_eval.protocol import JobSpec, Metric, Results

from ._common import as_float, make_results


def lm_eval_command(job: JobSpec, *, endpoint_url: str, output_dir: str) -> list[str]:
    p = job.params
    chat = job.endpoint.type == "chat"
    margs = [f"model={job.endpoint.model_id}", f"base_url={endpoint_url}", "tokenized_requests=False"]
    if p.parallelism:
        margs.append(f"num_concurrent={p.parallelism}")
    if p.max_retries is not None:
        margs.append(f"max_retries={p.max_retries}")
    if p.request_timeout:
        margs.append(f"timeout={int(p.request_timeout)}")
    cmd = ["lm_eval", "--model", "local-chat-completions" if chat else "local-completions",
           "--model_args", ",".join(margs), "--tasks", job.task.harness_task or job.task.name,
           "--output_path", output_dir, "--log_samples"]  # fmt: skip
    if chat:
        cmd.append("--apply_chat_template")
    if p.limit_samples:
        cmd += ["--limit", str(p.limit_samples)]
    if p.num_fewshot is not None:
        cmd += ["--num_fewshot", str(p.num_fewshot)]
    if p.seed is not None:
        cmd += ["--seed", str(p.seed)]
    gen = []
    if p.temperature is not None:
        gen.append(f"temperature={p.temperature}")
    if p.top_p is not None:
        gen.append(f"top_p={p.top_p}")
    if p.max_new_tokens:
        gen.append(f"max_gen_toks={p.max_new_tokens}")
    if gen:
        cmd += ["--gen_kwargs", ",".join(gen)]
    if p.system_prompt:
        cmd += ["--system_instruction", p.system_prompt]
    key = job.endpoint.api_key_name
    if key:
        if not key.replace("_", "").isalnum():
            raise ValueError(f"target.api_endpoint.api_key_name {key!r} is not an environment variable name")
        return ["sh", "-c", f'OPENAI_API_KEY="${{{key}}}" exec {shlex.join(cmd)}']
    return cmd


def _metrics(block: dict[str, Any]) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for key, val in block.items():
        name, _, flt = key.partition(",")
        if "_stderr" in name or name in ("alias", "name", "sample_len", "samples"):
            continue
        v = as_float(val)
        if v is None:
            continue
        se = as_float(block.get(f"{name}_stderr,{flt}" if flt else f"{name}_stderr"))
        label = name if flt in ("", "none") else f"{name}[{flt}]"
        out[label] = Metric(value=v, stderr=se)
    return out


def find_results_file(output_dir: Path) -> Path:
    files = sorted(output_dir.rglob("results_*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        raise ValueError(f"lm-eval: no results_*.json under {output_dir}")
    return files[-1]


def parse_lm_eval(job: JobSpec, output_dir: Path) -> Results:
    doc = json.loads(find_results_file(output_dir).read_text())
    task = job.task.harness_task or job.task.name
    results: dict[str, Any] = doc.get("results", {})
    groups_doc: dict[str, Any] = doc.get("groups", {})
    main = groups_doc.get(task) or results.get(task)
    if main is None:
        raise ValueError(f"lm-eval: task {task!r} not in the results file (found: {', '.join(results) or 'none'})")
    subtasks = {k: _metrics(v) for k, v in results.items() if k != task}
    groups = {k: _metrics(v) for k, v in groups_doc.items() if k != task}
    n_samples_doc = doc.get("n-samples", {})
    if task in n_samples_doc:
        n = int(n_samples_doc[task].get("effective", 0))
    else:  # a group: the sum over its subtasks
        n = sum(int(v.get("effective", 0)) for v in n_samples_doc.values())
    shots = doc.get("n-shot", {}).get(task)
    cfg = doc.get("config", {})
    return make_results(
        job,
        harness="lm-evaluation-harness",
        version=str(doc.get("lm_eval_version", "unknown")),
        metrics=_metrics(main),
        n_samples=n,
        subtasks=subtasks,
        groups=groups,
        endpoint_url=_base_url(str(cfg.get("model_args", ""))),
        num_fewshot=int(shots) if isinstance(shots, int) else 0,
        duration_s=as_float(doc.get("total_evaluation_time_seconds")),
    )


def _base_url(model_args: str) -> str:
    for part in model_args.split(","):
        if part.startswith("base_url="):
            return part.split("=", 1)[1]
    return ""
