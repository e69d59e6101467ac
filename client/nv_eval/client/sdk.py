"""The async Python SDK: :class:`Client` talks to the daemon and follows the event stream.

    async with await Client.connect() as c:          # configured bus or the embedded default
        inv = await c.run(compose_run("local_llama_3_1_8b_instruct", "examples"))
        async for ev in c.events(inv.invocation_id, follow=True):
            ...

API calls are NATS requests to ``<prefix>.api.<verb>``; events are replayed from the
JetStream events stream with an ordered consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

from nv_eval.protocol import (
    TERMINAL_STATES,
    ApiError,
    Event,
    InvocationRecord,
    KillReply,
    KillRequest,
    ListRunsReply,
    ListRunsRequest,
    ListTasksReply,
    ListTasksRequest,
    ProtocolError,
    ResumeReply,
    ResumeRequest,
    RunConfig,
    RunReply,
    RunRequest,
    StatusEvent,
    StatusReply,
    StatusRequest,
    Subjects,
    TaskEntry,
    decode,
    encode,
)

from ._compose import ComposedRun
from ._errors import BusUnreachableError, NvEvalError, from_api_error

T = TypeVar("T")


class Client:
    """An async client of the nv-eval daemon on one bus (url + subject prefix)."""

    def __init__(self, nc: Any, prefix: str, timeout: float = 10.0) -> None:
        self._nc = nc
        self.prefix = prefix
        self.subjects = Subjects(prefix)
        self.timeout = timeout

    @classmethod
    async def connect(cls, url: str | None = None, prefix: str | None = None, timeout: float = 10.0) -> Client:
        """Connect to ``url`` (default: ``NV_EVAL_NATS_URL``, the config file, or the embedded default)."""
        import nats

        if url is None:
            from ._rpc import connect_settings

            s = await asyncio.to_thread(connect_settings)
            url, prefix = s.url, prefix or s.prefix
        try:
            nc = await nats.connect(url, connect_timeout=min(timeout, 5), max_reconnect_attempts=3, allow_reconnect=True)
        except Exception as e:  # noqa: BLE001
            raise BusUnreachableError(f"cannot reach NATS at {url}: {type(e).__name__}: {e}") from None
        from nv_eval.protocol import DEFAULT_PREFIX

        return cls(nc, prefix or DEFAULT_PREFIX, timeout)

    async def close(self) -> None:
        await self._nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, verb: str, req: Any, reply_type: type[T]) -> T:
        import nats.errors

        subject = self.subjects.api(verb)
        try:
            msg = await self._nc.request(subject, encode(req), timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise BusUnreachableError(f"no daemon answers on {subject}") from None
        except nats.errors.TimeoutError:
            raise BusUnreachableError(f"the daemon did not answer {verb} within {self.timeout:.0f}s") from None
        try:
            reply = decode(msg.data, reply_type | ApiError)  # type: ignore[operator]
        except ProtocolError as e:
            raise NvEvalError(f"unexpected reply from the daemon to {verb}: {e}") from None
        if isinstance(reply, ApiError):
            raise from_api_error(reply.code, reply.message)
        return reply  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ API verbs

    async def run(
        self,
        run: ComposedRun | RunConfig,
        tasks: list[TaskEntry] | None = None,
        raw_config: dict[str, Any] | None = None,
    ) -> InvocationRecord:
        """Submit a composed run (or a RunConfig with its registry entries); returns the invocation."""
        if isinstance(run, ComposedRun):
            req = RunRequest(config=run.config, tasks=run.tasks, raw_config=run.doc)
        else:
            if tasks is None:
                from nv_eval.protocol import load_registry, resolve_task

                reg = load_registry()
                tasks = [resolve_task(reg, t.name) for t in run.evaluation.tasks]
            req = RunRequest(config=run, tasks=tasks, raw_config=raw_config or {})
        return (await self._call("run", req, RunReply)).invocation

    async def status(self, id: str) -> StatusReply:
        return await self._call("status", StatusRequest(id=id), StatusReply)

    async def kill(self, id: str) -> KillReply:
        return await self._call("kill", KillRequest(id=id), KillReply)

    async def resume(self, id: str) -> ResumeReply:
        return await self._call("resume", ResumeRequest(id=id), ResumeReply)

    async def list_runs(self, since: float | None = None, limit: int = 100) -> list[InvocationRecord]:
        return (await self._call("list_runs", ListRunsRequest(since=since, limit=limit), ListRunsReply)).invocations

    async def list_tasks(self) -> list[TaskEntry]:
        return (await self._call("list_tasks", ListTasksRequest(), ListTasksReply)).tasks

    # ------------------------------------------------------------------ events

    async def events(
        self,
        invocation_id: str,
        job_index: int | None = None,
        kind: str | None = None,
        follow: bool = False,
        idle_timeout: float = 1.0,
    ) -> AsyncIterator[Event]:
        """Replay the events of an invocation (or one job, or one kind) from the start.

        With ``follow=False`` the iterator ends once it has caught up with the stream;
        with ``follow=True`` it keeps waiting (the caller breaks out).
        """
        from nats.js.api import DeliverPolicy

        js = self._nc.jetstream()
        subject = f"{self.prefix}.events.{invocation_id}.{'*' if job_index is None else job_index}.{kind or '*'}"
        try:
            sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        except Exception as e:  # noqa: BLE001
            raise BusUnreachableError(f"cannot read the events stream: {type(e).__name__}: {e}") from None
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout)
                except Exception as e:  # noqa: BLE001 - nats TimeoutError
                    if type(e).__name__ != "TimeoutError":
                        raise
                    if not follow:
                        info = await sub.consumer_info()
                        if info.num_pending == 0:
                            return
                    continue
                try:
                    ev = decode(msg.data, Event)
                except ProtocolError:
                    continue
                yield ev
                if not follow and msg.metadata.num_pending == 0:
                    return
        finally:
            await sub.unsubscribe()

    async def wait(self, invocation_id: str, poll: float = 1.0) -> InvocationRecord:
        """Wait until every job of the invocation is in a terminal state."""
        while True:
            inv = (await self.status(invocation_id)).invocation
            if inv.jobs and all(j.state in TERMINAL_STATES for j in inv.jobs):
                return inv
            await asyncio.sleep(poll)


def is_terminal(ev: Event) -> bool:
    return isinstance(ev, StatusEvent) and ev.state in TERMINAL_STATES
