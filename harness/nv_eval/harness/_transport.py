"""Access to the request engine (``_engine.RequestEngine``) and a minimal stand-in with the same
interface used only when the engine module is absent (an install without it, or during development)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


class EndpointFailure(Exception):
    """Requests to the endpoint failed after retries (the engine's ``EndpointError``)."""


@dataclass
class SimpleStats:
    requests: int = 0
    cached_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    request_phase_s: float = 0.0


class SimpleEngine:
    """Bounded-concurrency aiohttp client with retries; no cache. Same surface as RequestEngine."""

    def __init__(
        self, base_url: str, api_key: str | None, config: Any, cache_dir: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.parallelism = int(getattr(config, "parallelism", 16))
        self.timeout = float(getattr(config, "request_timeout", 120.0))
        self.max_retries = int(getattr(config, "max_retries", 5))
        self.on_progress = on_progress
        self.stats = SimpleStats()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SimpleEngine:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(min(8.0, 0.25 * 2**attempt))
            t0 = time.monotonic()
            try:
                async with self._session.post(self.base_url + path, json=body) as r:
                    if r.status >= 500 or r.status == 429:
                        last = f"HTTP {r.status}"
                        continue
                    if r.status >= 400:
                        raise EndpointFailure(f"HTTP {r.status} from {path}: {(await r.text())[:200]}")
                    data: dict[str, Any] = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError) as e:
                last = type(e).__name__
                continue
            self.stats.requests += 1
            self.stats.latencies.append(time.monotonic() - t0)
            usage = data.get("usage") or {}
            self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
            return data
        raise EndpointFailure(f"{path}: failed after {self.max_retries} retries ({last})")

    async def map(
        self, requests: Iterable[tuple[str, dict[str, Any]]], total: int | None = None
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[int, dict[str, Any]] | BaseException] = asyncio.Queue()
        sem = asyncio.Semaphore(self.parallelism)
        t0 = time.monotonic()
        done = 0

        async def one(i: int, path: str, body: dict[str, Any]) -> None:
            try:
                async with sem:
                    await queue.put((i, await self.post(path, body)))
            except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
                await queue.put(e)

        tasks = [asyncio.create_task(one(i, p, b)) for i, (p, b) in enumerate(requests)]
        n = total if total is not None else len(tasks)
        try:
            for _ in range(len(tasks)):
                got = await queue.get()
                if isinstance(got, BaseException):
                    raise got
                done += 1
                if self.on_progress:
                    self.on_progress(done, n)
                yield got
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.request_phase_s += time.monotonic() - t0


def engine_classes() -> tuple[type, type, tuple[type[BaseException], ...]]:
    """(engine class, config class, endpoint error types): the real engine when installed."""
    try:
        from ._engine import EndpointError, EngineConfig, RequestEngine  # type: ignore[attr-defined]
    except ImportError:
        return SimpleEngine, _SimpleConfig, (EndpointFailure,)
    return RequestEngine, EngineConfig, (EndpointError, EndpointFailure)


@dataclass
class _SimpleConfig:
    parallelism: int = 16
    request_timeout: float = 120.0
    max_retries: int = 5
