"""lm-evaluation-harness in a container (placeholder, filled below)."""
from __future__ import annotations
from pathlib import Path
from nv_eval.protocol import JobSpec, Results
def lm_eval_command(job: JobSpec, *, endpoint_url: str, output_dir: str) -> list[str]:
    raise NotImplementedError
def parse_lm_eval(job: JobSpec, output_dir: Path) -> Results:
    raise NotImplementedError
