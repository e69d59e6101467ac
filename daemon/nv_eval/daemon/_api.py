"""The request/reply API (``<prefix>.api.<verb>``) served as a NATS micro service.

Each request is decoded into the verb's request struct; a malformed one is answered with
``ApiError(code="bad_request")``, an unexpected failure with ``ApiError(code="internal")``;
the service keeps answering either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from nv_eval.protocol import (
    PROTOCOL_VERSION,
    ApiError,
    KillRequest,
    ListRunsReply,
    ListRunsRequest,
    ListTasksReply,
    ListTasksRequest,
    ProtocolError,
    ResumeRequest,
    RunRequest,
    StatusReply,
    StatusRequest,
    decode,
    encode,
    load_registry,
)
from nv_eval.protocol.logsetup import get_logger

from ._engine import ApiFailure, Engine

log = get_logger("nv_eval.daemon.api")

SERVICE_NAME = "nv-eval-daemon"
SERVICE_VERSION = "0.1.0"
HANDLER_TIMEOUT = 30.0

Handler = Callable[[Any], Awaitable[Any]]


class Api:
    """Binds the verbs to the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tasks_cache: ListTasksReply | None = None

    async def run(self, req: RunRequest) -> Any:
        return await self.engine.run(req)

    async def status(self, req: StatusRequest) -> Any:
        inv, jid = self.engine.lookup(req.id)
        return StatusReply(invocation=inv, job_id=jid)

    async def kill(self, req: KillRequest) -> Any:
        return await self.engine.kill(req.id)

    async def resume(self, req: ResumeRequest) -> Any:
        return await self.engine.resume(req.id)

    async def list_runs(self, req: ListRunsRequest) -> Any:
        if req.limit < 0:
            return ApiError(code="bad_request", message=f"limit: expected a number >= 0, got {req.limit}")
        return ListRunsReply(invocations=self.engine.store.list_invocations(req.since, req.limit))

    async def list_tasks(self, req: ListTasksRequest) -> Any:
        if self._tasks_cache is None:
            reg = load_registry()
            self._tasks_cache = ListTasksReply(tasks=[reg[k] for k in sorted(reg)])
        return self._tasks_cache

    def verbs(self) -> dict[str, tuple[type, Handler]]:
        return {
            "run": (RunRequest, self.run),
            "status": (StatusRequest, self.status),
            "kill": (KillRequest, self.kill),
            "resume": (ResumeRequest, self.resume),
            "list_runs": (ListRunsRequest, self.list_runs),
            "list_tasks": (ListTasksRequest, self.list_tasks),
        }


async def handle(verb: str, req_type: type, fn: Handler, data: bytes) -> bytes:
    """Decode, dispatch and encode one request; never raises."""
    try:
        req = decode(data or b"{}", req_type)
    except ProtocolError as e:
        log.warning("bad request", verb=verb, error=str(e))
        return encode(ApiError(code="bad_request", message=str(e)))
    v = getattr(req, "v", PROTOCOL_VERSION)
    if v != PROTOCOL_VERSION:
        return encode(
            ApiError(code="unsupported_version", message=f"protocol v{v} not supported (daemon speaks v{PROTOCOL_VERSION})")
        )
    try:
        with anyio.fail_after(HANDLER_TIMEOUT):
            reply = await fn(req)
    except ApiFailure as e:
        reply = e.error
    except TimeoutError:
        log.error("request timed out", verb=verb)
        reply = ApiError(code="internal", message=f"{verb}: timed out after {HANDLER_TIMEOUT:.0f}s")
    except Exception as e:  # noqa: BLE001 - answer and keep serving
        log.exception("request failed", verb=verb)
        reply = ApiError(code="internal", message=f"{verb}: {type(e).__name__}: {e}")
    if isinstance(reply, ApiError):
        log.info("request refused", verb=verb, code=reply.code, message=reply.message)
    return encode(reply)


async def start_service(api: Api, queue_group: str) -> Service:
    """Register the micro service and one endpoint per verb on ``<prefix>.api.<verb>``."""
    engine = api.engine
    svc = await add_service(
        engine.nc,
        ServiceConfig(
            name=SERVICE_NAME,
            version=SERVICE_VERSION,
            description="nv-eval daemon API",
            metadata={"prefix": engine.subjects.prefix},
            queue_group=queue_group,
        ),
    )
    for verb, (req_type, fn) in api.verbs().items():
        await svc.add_endpoint(
            EndpointConfig(
                name=verb,
                subject=engine.subjects.api(verb),
                handler=_endpoint(verb, req_type, fn),
                queue_group=queue_group,
            )
        )
    return svc


def _endpoint(verb: str, req_type: type, fn: Handler) -> Callable[[Request], Awaitable[None]]:
    async def _h(request: Request) -> None:
        out = await handle(verb, req_type, fn, request.data)
        await request.respond(out)

    return _h
