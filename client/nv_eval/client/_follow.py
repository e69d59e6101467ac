"""Following an invocation live: ``run --follow`` progress bars and ``logs -f``.

The event stream (JetStream, replayed from the start) drives the display; a status poll
is the authority for "ended", so a follower never hangs on a missed event.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from nv_eval.protocol import TERMINAL_STATES, Event, InvocationRecord

from ._errors import EXIT_FAILED, EXIT_OK, BusUnreachableError


async def _stream(
    invocation_id: str,
    job_index: int | None,
    kind: str | None,
    follow: bool,
    on_event: Callable[[Event], None],
    on_status: Callable[[InvocationRecord], None] | None = None,
    job_id: str | None = None,
    poll: float = 1.0,
) -> InvocationRecord | None:
    from .sdk import Client

    async with await Client.connect() as client:
        if not follow:
            async for ev in client.events(invocation_id, job_index, kind, follow=False):
                on_event(ev)
            return None
        ended = asyncio.Event()
        last: list[InvocationRecord] = []

        async def watch_status() -> None:
            down_since: float | None = None
            while True:
                try:
                    inv = (await client.status(invocation_id)).invocation
                    down_since = None
                except BusUnreachableError:  # e.g. the daemon restarts: keep following for a while
                    loop = asyncio.get_running_loop()
                    down_since = down_since or loop.time()
                    if loop.time() - down_since > 60:
                        raise
                    await asyncio.sleep(poll)
                    continue
                last[:] = [inv]
                if on_status:
                    on_status(inv)
                jobs = [j for j in inv.jobs if job_id is None or j.job_id == job_id]
                if jobs and all(j.state in TERMINAL_STATES for j in jobs):
                    ended.set()
                    return
                await asyncio.sleep(poll)

        seen = [asyncio.get_running_loop().time()]

        async def consume() -> None:
            async for ev in client.events(invocation_id, job_index, kind, follow=True):
                seen[0] = asyncio.get_running_loop().time()
                on_event(ev)

        consumer = asyncio.create_task(consume())
        try:
            await watch_status()
            # the status says it ended: let the consumer deliver the last events (quiet window)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while loop.time() < deadline and loop.time() - seen[0] < 0.5 and not consumer.done():
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.2)
        finally:
            consumer.cancel()
            try:
                await consumer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        return last[0] if last else None


def follow_invocation(invocation_id: str) -> int:
    """Live per-job progress bars until the invocation ends; exit code 1 if any job did not succeed."""
    from nv_eval.protocol import ProgressEvent, StatusEvent
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.fields[job]}"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console,
    )
    bars: dict[str, int] = {}

    def bar(job_id: str, task: str = "") -> int:
        if job_id not in bars:
            bars[job_id] = progress.add_task(task or job_id, total=None, job=job_id, state="pending")
        return bars[job_id]

    def on_status(inv: InvocationRecord) -> None:
        for j in inv.jobs:
            b = bar(j.job_id, j.task)
            progress.update(b, description=j.task, state=j.state)
            if j.progress:
                progress.update(b, completed=j.progress.done, total=j.progress.total)

    def on_event(ev: Event) -> None:
        b = bar(ev.job_id)
        if isinstance(ev, ProgressEvent):
            progress.update(b, completed=ev.done, total=ev.total)
        elif isinstance(ev, StatusEvent):
            progress.update(b, state=ev.state + (f" ({ev.message})" if ev.message and ev.state == "failed" else ""))

    with progress:
        final = asyncio.run(_stream(invocation_id, None, None, True, on_event, on_status))
    if final is None:
        return EXIT_FAILED
    from .commands.status import render_status

    sys.stdout.write(render_status(final) + "\n")
    return EXIT_OK if all(j.state == "succeeded" for j in final.jobs) else EXIT_FAILED


def print_logs(invocation_id: str, job_id: str | None, follow: bool, several: bool, as_json: bool = False) -> int:
    """Print log lines of one job (or all jobs of an invocation); ``follow`` waits for the end."""
    from nv_eval.protocol import LogEvent, encode, split_job_id

    job_index = split_job_id(job_id)[1] if job_id else None

    def on_event(ev: Event) -> None:
        if isinstance(ev, LogEvent) and as_json:
            sys.stdout.write(encode(ev).decode() + "\n")
            sys.stdout.flush()
        elif isinstance(ev, LogEvent):
            tag = f"[{ev.job_id}] " if several else ""
            for line in ev.lines:
                sys.stdout.write(f"{tag}{line}\n")
            sys.stdout.flush()

    asyncio.run(_stream(invocation_id, job_index, "log" if not follow else None, follow, on_event, job_id=job_id))
    return EXIT_OK
