"""The request engine against a real aiohttp OpenAI-compatible server that injects faults.

(a) replies under connection resets, 500s, 429 + Retry-After and slow replies on a fifth of
requests equal the clean run's; (c) 429s lower the concurrency and it recovers;
(d) EndpointError after ``max_retries`` with a one-line message; no task outlives ``map``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from nv_eval.harness._engine import EndpointError, EngineConfig, RequestEngine

from tests._support.faulty_endpoint import FaultyEndpoint, chat_reply, completions_reply, request_key

pytestmark = pytest.mark.timeout(120)


def workload(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Loglikelihood-style completions interleaved with chat requests (a generator: lazy)."""
    for i in range(n):
        if i % 3 == 2:
            yield (
                "/chat/completions",
                {
                    "model": "faulty-model",
                    "messages": [{"role": "user", "content": f"Question {i}: pick A, B, C or D."}],
                    "max_tokens": 16,
                    "temperature": 0.0,
                },
            )
        else:
            yield (
                "/completions",
                {
                    "model": "faulty-model",
                    "prompt": f"Context number {i} says something.  Continuation {i % 7} here",
                    "echo": True,
                    "logprobs": 1,
                    "max_tokens": 1,
                    "temperature": 0.0,
                },
            )


def expected(path: str, body: dict[str, Any]) -> dict[str, Any]:
    import json

    reply = completions_reply(body) if path == "/completions" else chat_reply(body)
    return json.loads(json.dumps(reply))  # what goes over the wire


async def run_all(engine: RequestEngine, n: int) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    async with contextlib.aclosing(engine.map(workload(n), total=n)) as it:
        async for i, reply in it:
            assert i not in out
            out[i] = reply
    return out


def only_this_task_left() -> bool:
    """No engine task (feeder, workers) outlives ``map`` (the in-process server has its own)."""
    return not [t for t in asyncio.all_tasks() if t.get_name().startswith("nv-eval-")]


async def test_faulty_endpoint_gives_the_clean_runs_replies() -> None:
    n = 600
    cfg = EngineConfig(parallelism=16, max_retries=5, backoff_base=0.01, request_timeout=1.0)
    async with FaultyEndpoint() as clean, RequestEngine(clean.base_url, None, cfg) as engine:
        clean_replies = await run_all(engine, n)
        assert engine.stats.retries == 0
    async with FaultyEndpoint(fault_fraction=0.2, retry_after="0.05", slow_s=2.0) as faulty:
        progress: list[tuple[int, int]] = []
        async with RequestEngine(
            faulty.base_url, "sk-test", cfg, on_progress=lambda d, t: progress.append((d, t))
        ) as engine:
            replies = await run_all(engine, n)
        # every fault kind was injected, on roughly a fifth of the requests
        assert set(faulty.faults) == {"reset", "500", "429", "slow"}
        assert 0.12 * n < sum(faulty.faults.values()) < 0.28 * n
        # slow replies exceeded request_timeout and were retried like the others
        assert engine.stats.retries >= sum(faulty.faults.values())
        assert engine.stats.rate_limited == faulty.faults["429"]
        assert engine.stats.requests == n
    assert replies == clean_replies
    for i, (path, body) in enumerate(workload(n)):
        assert replies[i] == expected(path, body)
    assert progress[-1] == (n, n) and len(progress) == n
    assert engine.stats.prompt_tokens > 0 and engine.stats.latencies.count == n
    assert only_this_task_left()


async def test_429_lowers_concurrency_then_recovers() -> None:
    cfg = EngineConfig(parallelism=16, backoff_base=0.01)
    async with FaultyEndpoint(rate_limit_above=4, retry_after="0.02", latency_s=0.005) as ep:
        async with RequestEngine(ep.base_url, None, cfg) as engine:
            first = await run_all(engine, 400)
            assert len(first) == 400
            assert engine.stats.rate_limited > 0
            assert engine.stats.min_concurrency_limit <= 4
            assert engine.stats.concurrency_limit < 16
            throttled = engine.stats.rate_limited
            # the server stops limiting: the engine climbs back to full parallelism
            ep.rate_limit_above = None
            ep.max_in_flight = 0
            again = await run_all(engine, 800)
            assert engine.stats.rate_limited == throttled
            assert engine.stats.concurrency_limit == 16
            assert ep.max_in_flight > 8
            assert set(ep.authorization) == {None}  # no key, no Authorization header
    assert again[5] == first[5]


async def test_endpoint_error_after_max_retries_is_one_line() -> None:
    cfg = EngineConfig(parallelism=4, max_retries=2, backoff_base=0.001)
    async with FaultyEndpoint(always_status=503) as ep, RequestEngine(ep.base_url, None, cfg) as engine:
        with pytest.raises(EndpointError) as info:
            await engine.post("/completions", {"model": "m", "prompt": "x"})
        msg = str(info.value)
        assert "\n" not in msg
        assert msg.startswith(f"POST {ep.base_url}/completions failed after 3 attempt(s): HTTP 503:")
        assert "injected failure" in msg
        assert ep.counts[request_key("/v1/completions", {"model": "m", "prompt": "x"})] == 3
        # through map: the same error (not an exception group), and no task left behind
        with pytest.raises(EndpointError, match="after 3 attempt"):
            await run_all(engine, 50)
        assert only_this_task_left()
        # a 4xx other than 408/429 fails at once, with the body excerpt
        ep.always_status = 400
        with pytest.raises(EndpointError, match=r"after 1 attempt\(s\): HTTP 400: .*injected failure"):
            await engine.post("/completions", {"model": "m", "prompt": "y"})
        assert ep.counts[request_key("/v1/completions", {"model": "m", "prompt": "y"})] == 1


async def test_unreachable_endpoint_fails_after_retries() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = EngineConfig(parallelism=2, max_retries=1, backoff_base=0.001)
    async with RequestEngine(f"http://127.0.0.1:{port}/v1", None, cfg) as engine:
        with pytest.raises(EndpointError, match=r"after 2 attempt\(s\): no response: ClientConnectorError"):
            await engine.post("/models", {})


def body_with_fault(ep: FaultyEndpoint, kind: str) -> dict[str, Any]:
    """A request body that the endpoint answers with fault ``kind`` on its first attempt."""
    for k in range(10_000):
        body = {"model": "faulty-model", "prompt": f"probe {k}", "max_tokens": 1}
        if ep.fault_for(request_key("/v1/completions", body)) == kind:
            return body
    raise AssertionError(f"no body gets fault {kind}")


@pytest.mark.parametrize("header", ["seconds", "http-date"])
async def test_retry_after_is_honoured(header: str) -> None:
    import email.utils
    import time

    cfg = EngineConfig(parallelism=2, backoff_base=0.001)
    async with FaultyEndpoint(fault_fraction=1.0) as ep, RequestEngine(ep.base_url, "sk-secret", cfg) as engine:
        body = body_with_fault(ep, "429")
        if header == "seconds":
            ep.retry_after, low, high = "0.6", 0.6, 3.0
        else:  # whole seconds only: the wait is between 1 and 2 s
            ep.retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
            low, high = 0.9, 4.0
        t0 = time.monotonic()
        reply = await engine.post("/completions", body)
        waited = time.monotonic() - t0
        assert low <= waited <= high
        assert reply == expected("/completions", body)
        assert ep.counts[request_key("/v1/completions", body)] == 2
        assert engine.stats.rate_limited == 1 and engine.stats.retries == 1
        assert dict(ep.authorization) == {"Bearer sk-secret": 2}
