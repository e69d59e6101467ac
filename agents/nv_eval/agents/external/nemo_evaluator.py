"""NeMo Evaluator in a container (placeholder)."""
from __future__ import annotations
from pathlib import Path
from nv_eval.protocol import JobSpec, Results
def nemo_evaluator_command(job: JobSpec, *, endpoint_url: str, output_dir: str) -> list[str]:
    raise NotImplementedError
def parse_nemo_evaluator(job: JobSpec, output_dir: Path) -> Results:
    raise NotImplementedError
