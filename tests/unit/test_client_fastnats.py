"""The socket-level NATS request client against a real nats-server and a real nats-py responder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import nats
import pytest
from nv_eval.client import _fastnats

from tests._support.services import free_port


@pytest.fixture()
def responder(nats_url: str, prefix: str) -> Iterator[str]:
    """A nats-py service on another thread: echoes ``<p>.echo`` reversed, ignores ``<p>.silent``."""
    ready = threading.Event()

    async def serve() -> None:
        nc = await nats.connect(nats_url)

        async def echo(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(msg.data[::-1])

        async def ignore(msg: nats.aio.msg.Msg) -> None:
            return None

        await nc.subscribe(f"{prefix}.echo", cb=echo)
        await nc.subscribe(f"{prefix}.silent", cb=ignore)
        await nc.flush()
        ready.set()
        while not getattr(serve, "done", False):
            await asyncio.sleep(0.05)
        await nc.close()

    t = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    t.start()
    assert ready.wait(10)
    yield prefix
    serve.done = True  # type: ignore[attr-defined]
    t.join(10)


def test_request_reply(nats_url: str, responder: str) -> None:
    assert _fastnats.request(nats_url, f"{responder}.echo", b"abc") == b"cba"
    big = bytes(range(256)) * 1000  # larger than one recv()
    assert _fastnats.request(nats_url, f"{responder}.echo", big) == big[::-1]
    assert _fastnats.request(nats_url, f"{responder}.echo", b"") == b""


def test_no_responders(nats_url: str, prefix: str) -> None:
    with pytest.raises(_fastnats.NoResponders):
        _fastnats.request(nats_url, f"{prefix}.nobody", b"x", timeout=2)


def test_timeout(nats_url: str, responder: str) -> None:
    t = time.monotonic()
    with pytest.raises(_fastnats.RequestTimeout):
        _fastnats.request(nats_url, f"{responder}.silent", b"x", timeout=0.5)
    assert time.monotonic() - t < 2


def test_unreachable() -> None:
    port = free_port()
    with pytest.raises(_fastnats.NatsUnreachable):
        _fastnats.request(f"nats://127.0.0.1:{port}", "x", b"x", timeout=1)
    assert not _fastnats.ping(f"nats://127.0.0.1:{port}")


def test_ping(nats_url: str) -> None:
    assert _fastnats.ping(nats_url)
