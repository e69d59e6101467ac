"""Unit tests of the engine's retry/concurrency policy and its cache (real SQLite, no server)."""

from __future__ import annotations

import asyncio
import email.utils
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from nv_eval.harness._cache import DB_NAME, RequestCache, request_key
from nv_eval.harness._engine import EndpointError, EngineConfig
from nv_eval.harness._engine_limits import AdaptiveLimiter, backoff_delay, parse_retry_after
from nv_eval.harness._engine_stats import LatencyStats


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= parse_retry_after(date, now=now) <= 10.0  # type: ignore[operator]
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0


def test_backoff_is_full_jitter_and_capped() -> None:
    delays = [backoff_delay(4, 0.5, 30.0) for _ in range(2000)]
    assert 0.0 <= min(delays) and max(delays) <= 4.0
    assert max(delays) > 3.0 and min(delays) < 1.0  # spread over the whole interval
    assert max(backoff_delay(30, 0.5, 2.0) for _ in range(200)) <= 2.0


async def test_limiter_halves_once_per_epoch_and_recovers() -> None:
    lim = AdaptiveLimiter(16)
    epochs = [await lim.acquire() for _ in range(16)]
    for e in epochs:  # a burst of 429s from requests admitted under the same limit halves once
        lim.release()
        lim.on_rate_limited(e)
    assert lim.limit == 8 and lim.decreases == 1
    e = await lim.acquire()
    lim.release()
    lim.on_rate_limited(e)
    assert lim.limit == 4 and lim.min_limit == 4
    successes = 0
    while lim.limit < 16:
        lim.on_success()
        successes += 1
        assert successes < 1000
    assert successes == sum(range(4, 16))  # +1 after a streak of `limit` successes
    lim.on_success()
    assert lim.limit == 16  # never above the configured parallelism


async def test_limiter_blocks_above_limit_and_wakes_on_release() -> None:
    lim = AdaptiveLimiter(2)
    await lim.acquire()
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert not waiter.done() and lim.in_use == 2
    lim.release()
    await asyncio.wait_for(waiter, 1)
    assert lim.in_use == 2
    cancelled = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    lim.release()
    lim.release()
    assert lim.in_use == 0


def test_config_validation_and_error_message() -> None:
    with pytest.raises(ValueError, match="parallelism"):
        EngineConfig(parallelism=0)
    with pytest.raises(ValueError, match="request_timeout"):
        EngineConfig(request_timeout=0)
    err = EndpointError("http://h/v1/completions", 6, 503, "upstream\nbusy")
    assert str(err) == "POST http://h/v1/completions failed after 6 attempt(s): HTTP 503: upstream\nbusy"
    assert "\n" not in str(EndpointError("u", 1, None, "x"))


def test_latency_reservoir_is_bounded() -> None:
    lat = LatencyStats()
    for k in range(20_000):
        lat.add(k / 1000)
    assert lat.count == 20_000 and len(lat.reservoir) == 4096
    assert lat.min_s == 0.0 and lat.max_s == 19.999
    assert 8.0 < lat.percentile(50) < 12.0


def test_request_key_canonical_and_ignores_non_semantic_fields() -> None:
    a = request_key("/completions", {"prompt": "x", "max_tokens": 1, "echo": True})
    assert a == request_key("/completions", {"echo": True, "max_tokens": 1, "prompt": "x"})
    assert a == request_key("/completions", {"echo": True, "max_tokens": 1, "prompt": "x", "user": "u1"})
    assert a != request_key("/chat/completions", {"echo": True, "max_tokens": 1, "prompt": "x"})
    assert a != request_key("/completions", {"echo": True, "max_tokens": 2, "prompt": "x"})


async def test_cache_reports_rows_only_after_commit_and_persists(tmp_path: Path) -> None:
    committed: list[int] = []
    done = threading.Event()

    def on_committed(tokens: list[int]) -> None:
        # the rows must already be readable from an independent connection
        with sqlite3.connect(tmp_path / DB_NAME) as conn:
            n = conn.execute("SELECT count(*) FROM responses").fetchone()[0]
        assert n >= len(committed) + len(tokens)
        committed.extend(tokens)
        if len(committed) == 1000:
            done.set()

    cache = RequestCache(tmp_path, on_committed, lambda t, e: None)
    assert cache.is_empty()
    for k in range(1000):
        cache.put(request_key("/p", {"k": k}), b'{"k":%d}' % k, k)
    assert await asyncio.to_thread(done.wait, 10)  # batches go on their own (size or age)
    cache.flush()
    cache.close()
    assert sorted(committed) == list(range(1000))
    again = RequestCache(tmp_path, lambda t: None, lambda t, e: None)
    try:
        assert len(again) == 1000 and not again.is_empty()
        assert again.get(request_key("/p", {"k": 7})) == b'{"k":7}'
        assert again.get(request_key("/p", {"k": 1000})) is None
    finally:
        again.close()
