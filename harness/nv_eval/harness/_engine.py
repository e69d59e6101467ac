"""Request engine: streams JSON requests to an OpenAI-compatible endpoint, fast and resumably.

- One pooled ``aiohttp.ClientSession`` (``TCPConnector(limit=parallelism)``).
- A fixed pool of ``parallelism`` worker tasks pulls from a queue fed lazily from the caller's
  iterable through a bounded window (:data:`WINDOW_MIN` / ``16·parallelism`` items in the
  pipeline at most), so memory is flat in the number of requests (never one task per request).
- Retries with exponential backoff + full jitter on connection errors, timeouts, 408 and 5xx
  (``max_retries``; a ``Retry-After`` on those is honoured too); 429 honours ``Retry-After`` (seconds or HTTP date) and lowers the
  effective concurrency AIMD-style (:class:`~._engine_limits.AdaptiveLimiter`), recovering
  after streaks of successes. Any other 4xx raises :class:`EndpointError` at once.
- With ``cache_dir``, every reply is written to the SQLite cache (:mod:`._cache`) and is
  reported (yielded) only once its row has committed: a request the caller saw complete is
  never sent again, even after a SIGKILL; a rerun sends only what is missing.
- Tasks are owned by ``map``: on exhaustion, error or early close (use
  ``contextlib.aclosing``) all of them are cancelled and awaited — no orphan tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sized
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import msgspec
from nv_eval.harness._cache import RequestCache, request_key
from nv_eval.harness._engine_limits import AdaptiveLimiter, backoff_delay, parse_retry_after
from nv_eval.harness._engine_stats import EngineStats, LatencyStats

__all__ = ["EndpointError", "EngineConfig", "EngineStats", "LatencyStats", "RequestEngine"]

WINDOW_MIN = 1024
_EXCERPT = 200

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class EngineConfig(msgspec.Struct, kw_only=True):
    """Request policy. ``max_retries`` bounds retries of connection errors, timeouts, 408 and
    5xx; 429s have their own budget (``rate_limit_retries``) because they are the server
    asking us to slow down, not a failure."""

    parallelism: int = 16
    request_timeout: float = 120.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    rate_limit_retries: int = 30
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.parallelism < 1:
            raise ValueError(f"parallelism: expected an integer >= 1, got {self.parallelism}")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout: expected seconds > 0, got {self.request_timeout}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries: expected an integer >= 0, got {self.max_retries}")


class EndpointError(Exception):
    """A request failed for good. The message is one line: what, after how many attempts, last status/body."""

    def __init__(self, url: str, attempts: int, status: int | None, detail: str) -> None:
        self.url = url
        self.attempts = attempts
        self.status = status
        self.detail = detail
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"POST {url} failed after {attempts} attempt(s): {what}: {detail}")


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


class _Fed:
    """End-of-input marker from the feeder: how many requests the iterable held."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class RequestEngine:
    """See the module docstring. Use as ``async with RequestEngine(...) as engine``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        config: EngineConfig,
        cache_dir: str | Path | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.on_progress = on_progress
        self.stats = EngineStats(concurrency_limit=config.parallelism, min_concurrency_limit=config.parallelism)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._limiter = AdaptiveLimiter(config.parallelism)
        self._window = max(WINDOW_MIN, 16 * config.parallelism)
        self._session: aiohttp.ClientSession | None = None
        self._cache: RequestCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> RequestEngine:
        self._loop = asyncio.get_running_loop()
        if self.cache_dir is not None:
            self._cache = RequestCache(self.cache_dir, self._committed_in_thread, self._failed_in_thread)
        connector = aiohttp.TCPConnector(limit=self.config.parallelism, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
            headers=self._headers,
            json_serialize=lambda o: _encode(o).decode(),
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._session is not None:
                await self._session.close()
        finally:
            self._session = None
            if self._cache is not None:
                cache, self._cache = self._cache, None
                cache.flush()
                await asyncio.to_thread(cache.close)

    # -- cache committer callbacks (run in the committer thread) ------------------------------
    def _committed_in_thread(self, tokens: list[Any]) -> None:
        self._to_loop(_deliver, tokens)

    def _failed_in_thread(self, tokens: list[Any], exc: BaseException) -> None:
        self._to_loop(_deliver_error, tokens, exc)

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed between the check and the call
            pass

    # -- one request, with the retry policy ---------------------------------------------------
    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request (not cached) with the same retry policy; returns the reply JSON."""
        _, decoded = await self._send(path, _encode(body))
        return decoded

    async def _send(self, path: str, data: bytes) -> tuple[bytes, dict[str, Any]]:
        session = self._session
        if session is None:
            raise RuntimeError("RequestEngine used outside 'async with'")
        cfg = self.config
        stats = self.stats
        limiter = self._limiter
        url = self.base_url + path
        failures = 0
        rate_limited = 0
        while True:
            epoch = await limiter.acquire()
            t0 = time.perf_counter()
            status: int | None = None
            retry_after: str | None = None
            raw = b""
            try:
                async with session.post(url, data=data) as resp:
                    status = resp.status
                    raw = await resp.read()
                    if status >= 400:
                        retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                status = None
                detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            finally:
                limiter.release()
            if status is not None and 200 <= status < 300:
                try:
                    decoded = _decode(raw)
                except msgspec.DecodeError:
                    decoded = None
                if isinstance(decoded, dict):
                    stats.latencies.add(time.perf_counter() - t0)
                    stats.requests += 1
                    usage = decoded.get("usage")
                    if isinstance(usage, dict):
                        stats.prompt_tokens += usage.get("prompt_tokens") or 0
                        stats.completion_tokens += usage.get("completion_tokens") or 0
                    limiter.on_success()
                    return raw, decoded
                detail = f"reply is not a JSON object: {_excerpt(raw)}"
            elif status == 429:
                stats.rate_limited += 1
                limiter.on_rate_limited(epoch)
                stats.concurrency_limit = limiter.limit
                stats.min_concurrency_limit = limiter.min_limit
                stats.concurrency_decreases = limiter.decreases
                rate_limited += 1
                if rate_limited > cfg.rate_limit_retries:
                    raise EndpointError(url, failures + rate_limited, status, f"rate limited: {_excerpt(raw)}")
                wait = parse_retry_after(retry_after)
                if wait is None:
                    wait = backoff_delay(rate_limited, cfg.backoff_base, cfg.backoff_max)
                stats.retries += 1
                await asyncio.sleep(min(wait, cfg.max_retry_after))
                continue
            elif status is not None:
                detail = _excerpt(raw)
                if status != 408 and status < 500:
                    raise EndpointError(url, failures + rate_limited + 1, status, detail)
            failures += 1
            stats.failed_attempts += 1
            if failures > cfg.max_retries:
                raise EndpointError(url, failures + rate_limited, status, detail)
            stats.retries += 1
            delay = backoff_delay(failures, cfg.backoff_base, cfg.backoff_max)
            hinted = parse_retry_after(retry_after)  # e.g. a 503 that says when to come back
            if hinted is not None:
                delay = max(delay, min(hinted, cfg.max_retry_after))
            await asyncio.sleep(delay)

    # -- many requests ------------------------------------------------------------------------
    async def map(
        self, requests: Iterable[tuple[str, dict[str, Any]]], total: int | None = None
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(path relative to ``base_url``, JSON body) -> yields (index, reply JSON) as they complete.

        Unordered. Served from the cache when present. Raises :class:`EndpointError` when a
        request fails after its retries. Close early with ``contextlib.aclosing``.
        """
        if total is None and isinstance(requests, Sized):
            total = len(requests)
        cache = self._cache
        # a cache empty at the start cannot hit (a duplicate within this run is simply sent again):
        # skip the per-request lookups
        lookup = cache is not None and not cache.is_empty()
        stats = self.stats
        on_progress = self.on_progress
        out: asyncio.Queue[Any] = asyncio.Queue()
        work: asyncio.Queue[tuple[int, str, dict[str, Any], bytes | None]] = asyncio.Queue()
        window = asyncio.Semaphore(self._window)

        async def feeder() -> None:
            count = 0
            try:
                for i, (path, body) in enumerate(requests):
                    await window.acquire()
                    count = i + 1
                    key = None
                    if cache is not None:
                        key = request_key(path, body)
                        hit = cache.get(key) if lookup else None
                        if hit is not None:
                            stats.cached_requests += 1
                            out.put_nowait((i, _decode(hit)))
                            continue
                    work.put_nowait((i, path, body, key))
            except Exception as e:  # noqa: BLE001 - a broken iterable is reported to the consumer
                out.put_nowait(e)
                return
            out.put_nowait(_Fed(count))

        async def worker() -> None:
            while True:
                i, path, body, key = await work.get()
                try:
                    raw, decoded = await self._send(path, _encode(body))
                except Exception as e:  # noqa: BLE001 - forwarded to the consumer, which raises it
                    out.put_nowait(e)
                    continue
                if cache is not None and key is not None:
                    cache.put(key, raw, (out, i, decoded))
                else:
                    out.put_nowait((i, decoded))

        t_start = time.perf_counter()
        tasks = [asyncio.create_task(feeder(), name="nv-eval-feeder")]
        tasks += [asyncio.create_task(worker(), name=f"nv-eval-worker-{n}") for n in range(self.config.parallelism)]
        done = 0
        fed: int | None = None
        try:
            while fed is None or done < fed:
                item = await out.get()
                if type(item) is tuple:
                    window.release()
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total if total is not None else (fed or 0))
                    yield item
                elif type(item) is _Fed:
                    fed = item.count
                else:
                    raise item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stats.request_phase_s += time.perf_counter() - t_start
            stats.concurrency_limit = self._limiter.limit


def _deliver(tokens: list[tuple[asyncio.Queue[Any], int, dict[str, Any]]]) -> None:
    for q, i, decoded in tokens:
        q.put_nowait((i, decoded))


def _deliver_error(tokens: list[tuple[asyncio.Queue[Any], int, dict[str, Any]]], exc: BaseException) -> None:
    for q, _, _ in tokens:
        q.put_nowait(exc)
