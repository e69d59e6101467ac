"""Metric aggregation as lm-evaluation-harness computes it: mean, ``mean_stderr`` (sample standard
deviation / sqrt(n)), size-weighted group means and the pooled-sample stderr for groups."""

from __future__ import annotations

import math
from collections.abc import Sequence

from nv_eval.protocol.results import Metric


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def mean_stderr(xs: Sequence[float]) -> float | None:
    """lm-eval's ``mean_stderr``: sqrt(sum((x - mu)^2) / (n - 1)) / sqrt(n); None for n < 2."""
    n = len(xs)
    if n < 2:
        return None
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def metric(xs: Sequence[float]) -> Metric:
    return Metric(value=mean(xs), stderr=mean_stderr(xs))


def pooled_sample_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's ``pooled_sample_stderr`` for a size-weighted group of subtasks."""
    pooled_var = sum((n - 1) * se**2 * n for n, se in zip(sizes, stderrs, strict=True)) / (sum(sizes) - len(sizes))
    return math.sqrt(pooled_var / sum(sizes))


def weighted_group(parts: Sequence[tuple[Metric, int]]) -> Metric:
    """lm-eval's group aggregate with ``weight_by_size: true`` (value) and pooled stderr."""
    total = sum(n for _, n in parts)
    value = sum(m.value * n for m, n in parts) / total
    if len(parts) == 0 or any(m.stderr is None for m, _ in parts) or total - len(parts) <= 0:
        return Metric(value=value)
    return Metric(value=value, stderr=pooled_sample_stderr([m.stderr or 0.0 for m, _ in parts], [n for _, n in parts]))
