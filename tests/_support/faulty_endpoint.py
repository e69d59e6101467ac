"""A real OpenAI-compatible aiohttp server that answers deterministically and injects faults.

Replies are pure functions of the request:
- ``/v1/completions``: whitespace-word tokens; each token's logprob is derived from a hash of the
  prompt up to and including it (a "causal" toy LM); ``echo`` + ``logprobs`` return the prompt's
  tokens, logprobs (first ``None``), ``top_logprobs`` and ``text_offset`` followed by
  ``max_tokens`` generated tokens.
- ``/v1/chat/completions``: a short answer ("The answer is C.\\n#### 42") chosen by hash.
- ``/v1/models``: one model.

Faults, decided per request key (sha256 of the path and the body's canonical JSON) so a run
is reproducible: a ``fault_fraction`` of keys get, on their *first* attempt only, one of a
connection reset, a 500, a 429 with ``Retry-After`` or a slow (but correct) reply.
``rate_limit_above=N`` answers 429 whenever more than N requests are in flight.

Observability: ``GET /stats`` → ``{"counts": {key: n}, "total": n, "max_in_flight": n}``;
``POST /admin`` with a JSON object changes ``fault_fraction``, ``rate_limit_above``,
``retry_after``, ``slow_s``, ``always_status``, ``latency_s`` at run time (``reset_counts``
clears the counters).

In process: ``async with FaultyEndpoint(...) as ep: ep.base_url``. As a process:
``python -m tests._support.faulty_endpoint --port P [--fault-fraction 0.2]`` prints
``READY <base_url>`` on stdout when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import socket
import struct
import sys
from collections import Counter
from typing import Any

from aiohttp import web

MODEL = "faulty-model"
_TOKEN_RE = re.compile(r"\s*\S+|\s+$")
_VOCAB = [" the", " a", " of", " and", " to", " in", " is", " it", " that", " was"]
FAULT_KINDS = ("reset", "500", "429", "slow")


def request_key(path: str, body: dict[str, Any]) -> str:
    """The server's identity of a request (independent of the engine's cache key)."""
    canon = json.dumps([path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _h(text: str) -> int:
    return struct.unpack("<Q", hashlib.blake2b(text.encode(), digest_size=8).digest())[0]


def token_logprob(prefix_and_token: str) -> float:
    """Deterministic logprob in [-10.01, -0.01] from the text up to and including the token."""
    return -round(0.01 + (_h(prefix_and_token) % 10000) / 1000.0, 6)


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def completion_choice(prompt: str, index: int, echo: bool, logprobs: int | None, max_tokens: int) -> dict[str, Any]:
    tokens: list[str] = tokenize(prompt) if echo else []
    generated = [_VOCAB[_h(prompt + "#" + str(k)) % len(_VOCAB)] for k in range(max_tokens)]
    text = (prompt if echo else "") + "".join(generated)
    choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": "length"}
    if logprobs is not None:
        all_tokens = tokens + generated
        offsets, lps, tops = [], [], []
        pos = 0
        full = prompt + "".join(generated)
        base = 0 if echo else len(prompt)
        for n, tok in enumerate(all_tokens):
            offsets.append(pos + base)
            end = pos + base + len(tok)
            lp = None if (echo and n == 0) else token_logprob(full[:end])
            lps.append(lp)
            tops.append(None if lp is None else {tok: lp})
            pos += len(tok)
        choice["logprobs"] = {"tokens": all_tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
    else:
        choice["logprobs"] = None
    return choice


def completions_reply(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    prompts = prompt if isinstance(prompt, list) else [prompt]
    echo = bool(body.get("echo", False))
    logprobs = body.get("logprobs")
    max_tokens = int(body.get("max_tokens", 16))
    choices = [completion_choice(str(p), i, echo, logprobs, max_tokens) for i, p in enumerate(prompts)]
    prompt_tokens = sum(len(tokenize(str(p))) for p in prompts)
    return {
        "id": "cmpl-" + request_key("/v1/completions", body)[:16],
        "object": "text_completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max_tokens * len(prompts),
            "total_tokens": prompt_tokens + max_tokens * len(prompts),
        },
    }


def chat_reply(body: dict[str, Any]) -> dict[str, Any]:
    canon = json.dumps(body.get("messages", []), sort_keys=True)
    h = _h(canon)
    content = f"The answer is {'ABCD'[h % 4]}.\n#### {h % 100}"
    prompt_tokens = len(tokenize(canon))
    return {
        "id": "chatcmpl-" + request_key("/v1/chat/completions", body)[:16],
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 8, "total_tokens": prompt_tokens + 8},
    }


class FaultyEndpoint:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_fraction: float = 0.0,
        retry_after: str = "0.05",
        slow_s: float = 0.3,
        rate_limit_above: int | None = None,
        always_status: int | None = None,
        latency_s: float = 0.0,
        seed: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.fault_fraction = fault_fraction
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.rate_limit_above = rate_limit_above
        self.always_status = always_status
        self.latency_s = latency_s
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.authorization: Counter[str | None] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def fault_for(self, key: str) -> str | None:
        """The fault a key gets on its first attempt, or None."""
        if self.fault_fraction <= 0:
            return None
        h = _h(self.seed + key)
        if (h % 10_000) / 10_000.0 >= self.fault_fraction:
            return None
        return FAULT_KINDS[(h // 10_000) % len(FAULT_KINDS)]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/admin", self._admin)
        return app

    async def __aenter__(self) -> FaultyEndpoint:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), 10)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "counts": dict(self.counts),
                "total": sum(self.counts.values()),
                "faults": dict(self.faults),
                "max_in_flight": self.max_in_flight,
            }
        )

    async def _admin(self, request: web.Request) -> web.Response:
        settings = await request.json()
        if settings.pop("reset_counts", False):
            self.counts.clear()
            self.max_in_flight = 0
        for k, v in settings.items():
            if k not in {"fault_fraction", "rate_limit_above", "retry_after", "slow_s", "always_status", "latency_s"}:
                return web.json_response({"error": f"unknown setting {k}"}, status=400)
            setattr(self, k, v)
        return web.json_response({"ok": True})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "/v1/completions", completions_reply)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "/v1/chat/completions", chat_reply)

    async def _handle(self, request: web.Request, path: str, reply: Any) -> web.StreamResponse:
        body = await request.json()
        key = request_key(path, body)
        self.counts[key] += 1
        self.authorization[request.headers.get("Authorization")] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self.always_status is not None:
                return web.json_response({"error": {"message": "injected failure"}}, status=self.always_status)
            if self.rate_limit_above is not None and self.in_flight > self.rate_limit_above:
                self.faults["429-overload"] += 1
                return web.json_response(
                    {"error": {"message": "too many requests"}}, status=429, headers={"Retry-After": self.retry_after}
                )
            fault = self.fault_for(key) if self.counts[key] == 1 else None
            if fault is not None:
                self.faults[fault] += 1
            if fault == "reset":
                transport = request.transport
                if transport is not None:
                    sock = transport.get_extra_info("socket")
                    if sock is not None:  # RST instead of FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    transport.abort()
                raise asyncio.CancelledError  # nothing can be written on an aborted connection
            if fault == "500":
                return web.json_response({"error": {"message": "injected internal error"}}, status=500)
            if fault == "429":
                return web.json_response(
                    {"error": {"message": "injected rate limit"}}, status=429, headers={"Retry-After": self.retry_after}
                )
            if fault == "slow":
                await asyncio.sleep(self.slow_s)
            return web.json_response(reply(body))
        finally:
            self.in_flight -= 1


async def _serve(args: argparse.Namespace) -> None:
    ep = FaultyEndpoint(port=args.port, fault_fraction=args.fault_fraction, retry_after=args.retry_after)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ep:
        print(f"READY {ep.base_url}", flush=True)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fault-fraction", type=float, default=0.0)
    p.add_argument("--retry-after", default="0.05")
    asyncio.run(_serve(p.parse_args()))
    sys.exit(0)


if __name__ == "__main__":
    main()
