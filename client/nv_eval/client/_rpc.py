"""One-shot API calls to the daemon (``<prefix>.api.<verb>``) for the CLI.

Uses the socket-level client in :mod:`._fastnats` (no nats-py import) and falls back to
nats-py only when the server needs TLS. Typed ``ApiError`` replies become client errors
with the documented exit codes.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._errors import BusUnreachableError, NvEvalError, from_api_error
from ._settings import BusSettings, resolve

T = TypeVar("T")


def connect_settings(start: bool = True) -> BusSettings:
    """The bus to talk to; in embedded mode, start the local stack first when ``start``."""
    s = resolve()
    if s.url is not None:
        return s
    from . import _embedded

    if not start:
        state = _embedded.read_state()
        if state and _embedded.healthy(state):
            return BusSettings(str(state["url"]), s.prefix, "embedded")
        raise BusUnreachableError("the embedded nv-eval daemon is not running (start it with: nv-eval daemon start)")
    return BusSettings(_embedded.ensure(s.prefix), s.prefix, "embedded")


def _full_request(url: str, subject: str, payload: bytes, timeout: float) -> bytes:
    import asyncio

    import nats

    async def go() -> bytes:
        nc = await nats.connect(url, connect_timeout=min(timeout, 5), max_reconnect_attempts=0)
        try:
            msg = await nc.request(subject, payload, timeout=timeout)
            return bytes(msg.data)
        finally:
            await nc.close()

    try:
        return asyncio.run(go())
    except Exception as e:  # noqa: BLE001
        if type(e).__name__ == "NoRespondersError":
            raise BusUnreachableError(f"no daemon answers on {subject} at {url}") from None
        raise BusUnreachableError(f"cannot reach NATS at {url}: {type(e).__name__}: {e}") from None


def _transport(verb: str, payload: bytes, timeout: float, settings: BusSettings | None) -> bytes:
    from . import _fastnats

    s = settings or connect_settings()
    assert s.url is not None
    subject = f"{s.prefix}.api.{verb}"
    try:
        return _fastnats.request(s.url, subject, payload, timeout)
    except _fastnats.NeedFullClient:
        return _full_request(s.url, subject, payload, timeout)
    except _fastnats.NoResponders:
        hint = " (start one with: nv-eval daemon start)" if s.source != "embedded" else ""
        raise BusUnreachableError(f"no daemon answers on {subject} at {s.url}{hint}") from None
    except _fastnats.RequestTimeout:
        raise BusUnreachableError(f"the daemon did not answer {verb} within {timeout:.0f}s at {s.url}") from None
    except _fastnats.NatsUnreachable as e:
        raise BusUnreachableError(f"cannot reach NATS at {s.url}: {e}") from None


def call(verb: str, req: Any, reply_type: type[T], *, timeout: float = 10.0, settings: BusSettings | None = None) -> T:
    """Send ``req`` to ``<prefix>.api.<verb>`` and return the decoded reply (or raise a client error)."""
    from nv_eval.protocol import ApiError, ProtocolError, decode, encode

    data = _transport(verb, encode(req), timeout, settings)
    try:
        reply = decode(data, reply_type | ApiError)  # type: ignore[operator]
    except ProtocolError as e:
        raise NvEvalError(f"unexpected reply from the daemon to {verb}: {e}") from None
    if isinstance(reply, ApiError):
        raise from_api_error(reply.code, reply.message)
    return reply  # type: ignore[no-any-return]


def call_json(
    verb: str, body: dict[str, Any], expect: str, *, timeout: float = 10.0, settings: BusSettings | None = None
) -> dict[str, Any]:
    """Like :func:`call` with plain JSON (no protocol import: the fast path of ``status``).

    ``body`` must match the verb's request struct (``v`` defaults to the receiver's protocol
    version); ``expect`` is the reply tag (e.g. ``"status"``).
    """
    import json

    data = _transport(verb, json.dumps(body).encode(), timeout, settings)
    try:
        reply = json.loads(data)
    except ValueError as e:
        raise NvEvalError(f"unexpected reply from the daemon to {verb}: not JSON ({e})") from None
    if not isinstance(reply, dict):
        raise NvEvalError(f"unexpected reply from the daemon to {verb}: not an object")
    if reply.get("reply") == "error":
        raise from_api_error(str(reply.get("code")), str(reply.get("message")))
    if reply.get("reply") != expect:
        raise NvEvalError(f"unexpected reply from the daemon to {verb}: {str(reply.get('reply'))!r}")
    return reply
