"""The endpoint probe refuses an OpenAI-compatible server that ignores ``echo`` (a real aiohttp
server that answers /v1/models and /v1/completions with only the generated token), exit 3."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
MODEL = "no-echo-model"


def _app(seen: list[dict]) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def completions(req: web.Request) -> web.Response:
        body = await req.json()
        seen.append(body)
        # ignores echo: only the generated token, offset counted from the end of the prompt
        n = len(body["prompt"])
        return web.json_response({
            "id": "x", "object": "text_completion", "model": MODEL,
            "choices": [{"index": 0, "text": " Rome", "finish_reason": "length",
                         "logprobs": {"tokens": [" Rome"], "text_offset": [n], "token_logprobs": [-0.25],
                                      "top_logprobs": [{" Rome": -0.25}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        })  # fmt: skip

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


@pytest.fixture()
def no_echo_server() -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(seen))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}/v1", seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_probe_refuses_endpoint_ignoring_echo(no_echo_server: tuple[str, list[dict]], tmp_path: Path) -> None:
    url, seen = no_echo_server
    p = subprocess.run(
        [HARNESS, "run", "--task", "arc_challenge", "--model-id", MODEL, "--endpoint-url", url + "/completions",
         "--endpoint-type", "completions", "--output-dir", str(tmp_path), "--params-json", '{"limit_samples": 2}'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 3, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "ignores echo" in last and "--endpoint-type chat" in last
    assert "Traceback" not in p.stderr
    assert len(seen) == 1 and seen[0]["echo"] is True  # refused at the first probe request, nothing scored
    assert not (tmp_path / "results.json").exists()


def test_probe_refuses_unknown_model(no_echo_server: tuple[str, list[dict]], tmp_path: Path) -> None:
    url, seen = no_echo_server
    p = subprocess.run(
        [HARNESS, "run", "--task", "arc_easy", "--model-id", "other", "--endpoint-url", url,
         "--endpoint-type", "completions", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 3
    assert "model 'other' not served" in p.stderr.strip().splitlines()[-1] and MODEL in p.stderr
    assert seen == []


def test_probe_refuses_shifted_logprobs_of_stock_llama_server(tmp_path: Path) -> None:
    """SmolLM2 (no BOS token) on llama_cpp.server *without* the BOS override: echoed logprobs are
    shifted by one position; the probe must refuse it and name the override as the remedy."""
    from tests._support.services import start_smollm2

    svc = start_smollm2(tmp_path / "llama", bos_fix=False)
    try:
        p = subprocess.run(
            [HARNESS, "run", "--task", "arc_challenge", "--model-id", svc.extra["model_id"], "--endpoint-url", svc.url,
             "--endpoint-type", "completions", "--output-dir", str(tmp_path / "out"), "--params-json", '{"limit_samples": 2}'],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        svc.stop()
    assert p.returncode == 3, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "shifted by one token" in last and "add_bos_token=bool:true" in last
    assert not (tmp_path / "out" / "results.json").exists()
