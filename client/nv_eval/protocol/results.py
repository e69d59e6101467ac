"""The normalized results document (``results.json``), also carried by the result event."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct, field

from ._version import PROTOCOL_VERSION


class Metric(Struct, omit_defaults=True):
    value: float
    stderr: float | None = None


class Usage(Struct):
    requests: int = 0
    cached_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    retries: int = 0


class Timings(Struct):
    started_at: float = 0.0
    finished_at: float = 0.0
    duration_s: float = 0.0
    request_phase_s: float | None = None
    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None


class Results(Struct, kw_only=True):
    task: str
    metrics: dict[str, Metric]
    n_samples: int
    mode: Literal["loglikelihood", "generative"]
    model_id: str
    endpoint_url: str
    endpoint_type: str
    harness: str
    harness_version: str
    num_fewshot: int = 0
    subtasks: dict[str, dict[str, Metric]] = {}  # e.g. MMLU per subject
    groups: dict[str, dict[str, Metric]] = {}  # e.g. MMLU stem/humanities/...
    config: dict[str, Any] = {}  # resolved job parameters (no secret values)
    timings: Timings = field(default_factory=Timings)
    usage: Usage = field(default_factory=Usage)
    notes: list[str] = []  # corrections applied, e.g. endpoint quirks detected by the probe
    v: int = PROTOCOL_VERSION
