"""SIGTERM while requests are in flight: the harness exits 143 promptly with one log line."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
MODEL = "slow-model"


@pytest.fixture()
def slow_chat_server() -> Iterator[tuple[str, list[str]]]:
    """Answers /v1/models and the probe at once; scoring requests hang for a minute."""
    seen: list[str] = []

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def chat(req: web.Request) -> web.Response:
        body = await req.json()
        seen.append(body["messages"][-1]["content"])
        if len(seen) > 1:
            await asyncio.sleep(60)
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=0.1)
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

    async def shutdown() -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await runner.cleanup()

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_sigterm_exits_143(slow_chat_server: tuple[str, list[str]], tmp_path: Path) -> None:
    url, seen = slow_chat_server
    p = subprocess.Popen(
        [HARNESS, "run", "--task", "arc_easy", "--model-id", MODEL, "--endpoint-url", url, "--endpoint-type", "chat",
         "--output-dir", str(tmp_path), "--params-json", '{"limit_samples": 3, "parallelism": 2, "max_retries": 0}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen) >= 2, "no scoring request reached the server"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 143, err
    assert time.monotonic() - t0 < 5
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("nv-eval-harness: terminated")
    assert not (tmp_path / "results.json").exists()
