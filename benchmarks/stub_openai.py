"""Zero-latency OpenAI-compatible stub for speed benchmarks (raw asyncio HTTP/1.1, keep-alive).

Endpoints: ``POST /v1/completions`` (``echo`` + ``logprobs``: whitespace-word tokens with
deterministic logprobs from a running CRC32 of the prompt, ``text_offset``, ``top_logprobs``,
then ``max_tokens`` generated tokens), ``POST /v1/chat/completions`` (a deterministic lettered
answer), ``GET /v1/models``. Replies are computed, not canned, but cheaply, so the client is
what a benchmark measures. Not a test double: it is a benchmark load generator's peer.

    python benchmarks/stub_openai.py --port 8765      # prints "READY http://127.0.0.1:8765/v1"
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import zlib
from typing import Any

import msgspec

MODEL = "stub-model"
_TOKEN_RE = re.compile(r"\s*\S+")
_VOCAB = (" the", " a", " of", " and", " to", " in", " is", " it")
_enc = msgspec.json.encode
_dec = msgspec.json.decode


def _lp(crc: int) -> float:
    return -0.01 - (crc % 10000) / 1000.0


def completions(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    prompt = str(prompt)
    echo = bool(body.get("echo"))
    max_tokens = int(body.get("max_tokens") or 16)
    crc = zlib.crc32(prompt.encode())
    generated = [_VOCAB[(crc >> (3 * k)) % len(_VOCAB)] for k in range(min(max_tokens, 64))]
    tokens: list[str] = []
    offsets: list[int] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    pos = 0
    running = 0
    if echo:
        for m in _TOKEN_RE.finditer(prompt):
            tok = m.group()
            running = zlib.crc32(tok.encode(), running)
            tokens.append(tok)
            offsets.append(m.start())
            lp = None if len(tokens) == 1 else _lp(running)
            lps.append(lp)
            tops.append(None if lp is None else {tok: lp})
        pos = len(prompt)
    for tok in generated:
        running = zlib.crc32(tok.encode(), running)
        lp = _lp(running)
        tokens.append(tok)
        offsets.append(pos)
        lps.append(lp)
        tops.append({tok: lp})
        pos += len(tok)
    gen_text = "".join(generated)
    choice: dict[str, Any] = {"index": 0, "text": (prompt if echo else "") + gen_text, "finish_reason": "length"}
    choice["logprobs"] = (
        {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
        if body.get("logprobs") is not None
        else None
    )
    n_prompt = len(tokens) - len(generated) if echo else len(_TOKEN_RE.findall(prompt))
    return {
        "id": "cmpl-stub",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [choice],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(generated), "total_tokens": n_prompt + len(generated)},
    }


def chat(body: dict[str, Any]) -> dict[str, Any]:
    crc = zlib.crc32(_enc(body.get("messages", [])))
    content = f"The answer is {'ABCD'[crc % 4]}.\n#### {crc % 100}"
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }


MODELS = _enc({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "stub"}]})


def _response(status: bytes, payload: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(payload)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + payload
    )  # fmt: skip


class _Http(asyncio.Protocol):
    __slots__ = ("transport", "buf")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(self._route(head.split(b" ", 2), body))

    @staticmethod
    def _route(line: list[bytes], body: bytes) -> bytes:
        method, path = line[0], line[1] if len(line) > 1 else b"/"
        try:
            if method == b"POST" and path == b"/v1/completions":
                return _response(b"200 OK", _enc(completions(_dec(body))))
            if method == b"POST" and path == b"/v1/chat/completions":
                return _response(b"200 OK", _enc(chat(_dec(body))))
            if method == b"GET" and path == b"/v1/models":
                return _response(b"200 OK", MODELS)
        except (msgspec.DecodeError, TypeError, ValueError, AttributeError) as e:
            return _response(b"400 Bad Request", _enc({"error": {"message": str(e)}}))
        return _response(b"404 Not Found", b'{"error":{"message":"not found"}}')


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY http://{host}:{bound}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description="zero-latency OpenAI-compatible stub")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
