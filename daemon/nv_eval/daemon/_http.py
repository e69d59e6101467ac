"""A small read-only HTTP API on 127.0.0.1 (``--http-port``): health, runs, status, agents.

``GET /healthz`` · ``GET /api/runs?limit=N&since=T`` · ``GET /api/status/<id>`` · ``GET /api/agents``;
bodies are the same msgspec structs as on the bus (JSON); errors are ``ApiError`` with a 4xx code.
"""

from __future__ import annotations

from typing import Any

import anyio
from aiohttp import web
from nv_eval.protocol import ApiError, ListRunsReply, StatusReply, encode
from nv_eval.protocol.logsetup import get_logger

from ._engine import ApiFailure, Engine

log = get_logger("nv_eval.daemon.http")

_HTTP_CODES = {"not_found": 404, "ambiguous": 409, "bad_request": 400, "conflict": 409}


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type="application/json")


def _error(err: ApiError) -> web.Response:
    return _json(err, _HTTP_CODES.get(err.code, 500))


def make_app(engine: Engine) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _json({"ok": True, **engine.snapshot()})

    async def runs(req: web.Request) -> web.Response:
        try:
            limit = int(req.query.get("limit", "100"))
            since = float(req.query["since"]) if "since" in req.query else None
        except ValueError:
            return _error(ApiError(code="bad_request", message="limit: expected an integer; since: a unix time"))
        return _json(ListRunsReply(invocations=engine.store.list_invocations(since, limit)))

    async def status(req: web.Request) -> web.Response:
        try:
            inv, jid = engine.lookup(req.match_info["id"])
        except ApiFailure as e:
            return _error(e.error)
        return _json(StatusReply(invocation=inv, job_id=jid))

    async def agents(_: web.Request) -> web.Response:
        return _json(engine.snapshot()["agents"])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/runs", runs)
    app.router.add_get("/api/status/{id}", status)
    app.router.add_get("/api/agents", agents)
    return app


async def serve_http(engine: Engine, host: str, port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    runner = web.AppRunner(make_app(engine), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("http api listening", url=f"http://{host}:{port}")
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(3, shield=True):
            await runner.cleanup()
