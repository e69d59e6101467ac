"""The harness command line (docs/contracts.md, "Harness command") built from a JobSpec.

Shared by every runtime so the process, Docker and Slurm runtimes launch the same thing.
Secrets travel by NAME only (``--api-key-env``), never as values.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import msgspec
from nv_eval.protocol import JobSpec

HARNESS_CMD_ENV = "NV_EVAL_HARNESS_CMD"


def default_harness_command() -> list[str]:
    """``$NV_EVAL_HARNESS_CMD`` (shell-split), else the ``nv-eval-harness`` next to the interpreter."""
    override = os.environ.get(HARNESS_CMD_ENV)
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "nv-eval-harness"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nv_eval.harness.cli"]


def endpoint_url_for(base: str, endpoint_type: str) -> str:
    """The full OpenAI URL for ``endpoint_type`` from a base like ``http://h:p`` or ``http://h:p/v1``."""
    base = base.rstrip("/")
    if base.endswith("/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + ("/chat/completions" if endpoint_type == "chat" else "/completions")


def harness_run_args(
    job: JobSpec,
    *,
    endpoint_url: str,
    output_dir: str,
    cache_dir: str | None = None,
    data_dir: str | None = None,
    task_file: str | None = None,
) -> list[str]:
    """Arguments after the harness executable: ``run --task ... --output-dir ...``."""
    args = [
        "run",
        "--task", job.task.name,
        "--model-id", job.endpoint.model_id,
        "--endpoint-url", endpoint_url,
        "--endpoint-type", job.endpoint.type,
        "--output-dir", output_dir,
    ]  # fmt: skip
    if cache_dir:
        args += ["--cache-dir", cache_dir]
    if data_dir:
        args += ["--data-dir", data_dir]
    if job.endpoint.api_key_name:
        args += ["--api-key-env", job.endpoint.api_key_name]
    params = msgspec.json.encode(job.params).decode()
    if params not in ("{}", ""):
        args += ["--params-json", params]
    if task_file:
        args += ["--task-file", task_file]
    return args


def progress_of(line: str) -> dict[str, Any] | None:
    """The harness's progress/done JSON line (its stdout contract), or None for ordinary output."""
    s = line.strip()
    if not (s.startswith("{") and s.endswith("}")):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("event") in ("progress", "done"):
        return obj
    return None
