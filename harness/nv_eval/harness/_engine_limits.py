"""Retry and concurrency policy of the request engine.

- :func:`backoff_delay`: exponential backoff with full jitter.
- :func:`parse_retry_after`: ``Retry-After`` as seconds or an HTTP date.
- :class:`AdaptiveLimiter`: an AIMD concurrency gate: halves its limit on a 429 (once per
  "epoch", so a burst of 429s from requests sent under the old limit halves it only once),
  adds one after a streak of ``limit`` consecutive successes, never exceeds the configured
  parallelism and never drops below 1.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import deque


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full-jitter backoff for retry number ``attempt`` (1-based): U(0, min(cap, base·2^(attempt-1)))."""
    return random.uniform(0.0, min(cap, base * (2.0 ** (attempt - 1))))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class AdaptiveLimiter:
    """Concurrency gate whose limit moves AIMD-style between 1 and ``maximum``."""

    __slots__ = ("maximum", "limit", "min_limit", "epoch", "_in_use", "_streak", "_waiters", "decreases")

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError(f"parallelism must be >= 1, got {maximum}")
        self.maximum = maximum
        self.limit = maximum
        self.min_limit = maximum
        self.epoch = 0
        self.decreases = 0
        self._in_use = 0
        self._streak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch at admission (pass it to :meth:`on_rate_limited`)."""
        if self._in_use < self.limit and not self._waiters:
            self._in_use += 1
            return self.epoch
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(fut)
            raise
        return self.epoch

    def release(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_use += 1
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self._streak = 0
            self.limit += 1
            self._wake()

    def on_rate_limited(self, admitted_epoch: int) -> None:
        """Halve the limit, unless a decrease already happened since this request was admitted."""
        self._streak = 0
        if admitted_epoch != self.epoch:
            return
        self.epoch += 1
        self.decreases += 1
        self.limit = max(1, self.limit // 2)
        self.min_limit = min(self.min_limit, self.limit)
