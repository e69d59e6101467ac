"""Counters of the request engine: requests, cache hits, retries, tokens, latency.

Latency keeps running count/sum/min/max plus a bounded reservoir (Algorithm R,
:data:`RESERVOIR_SIZE` samples) for percentiles, so memory stays flat in the number of requests.
"""

from __future__ import annotations

import math
import random

import msgspec

RESERVOIR_SIZE = 4096


class LatencyStats(msgspec.Struct):
    count: int = 0
    total_s: float = 0.0
    min_s: float = math.inf
    max_s: float = 0.0
    reservoir: list[float] = msgspec.field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        if seconds < self.min_s:
            self.min_s = seconds
        if seconds > self.max_s:
            self.max_s = seconds
        if len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(seconds)
        else:
            j = random.randrange(self.count)
            if j < RESERVOIR_SIZE:
                self.reservoir[j] = seconds

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """Approximate q-th percentile (0..100) from the reservoir; 0.0 when empty."""
        if not self.reservoir:
            return 0.0
        data = sorted(self.reservoir)
        idx = min(len(data) - 1, max(0, math.ceil(q / 100.0 * len(data)) - 1))
        return data[idx]

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_s": self.mean_s,
            "min_s": 0.0 if self.count == 0 else self.min_s,
            "p50_s": self.percentile(50),
            "p95_s": self.percentile(95),
            "p99_s": self.percentile(99),
            "max_s": self.max_s,
        }


class EngineStats(msgspec.Struct):
    """What the engine did. ``requests`` = replies received over the network (successful);
    ``cached_requests`` = served from the cache; ``retries`` = attempts repeated after a
    connection error, timeout, 408, 429 or 5xx; ``rate_limited`` = 429 replies received."""

    requests: int = 0
    cached_requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failed_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: LatencyStats = msgspec.field(default_factory=LatencyStats)
    request_phase_s: float = 0.0
    concurrency_limit: int = 0
    min_concurrency_limit: int = 0
    concurrency_decreases: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (latency as percentiles, not the reservoir)."""
        d = msgspec.structs.asdict(self)
        d["latencies"] = self.latencies.summary()
        return d
