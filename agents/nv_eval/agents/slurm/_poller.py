"""Slurm job states and the batched poller shared by every ``watch`` of one agent.

One poll = ONE ``squeue`` call for all watched jobs (``squeue --me``), plus, only for jobs
that already left the queue, ONE ``sacct`` call (falling back to ``sacct -c``, the jobcomp
file, when accounting storage is off). A failed poll (SSH hiccup, slurmctld busy) changes
no job's state: watchers keep the last known state and the error is counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import anyio
import structlog

from ._conn import Conn, ConnError

log = structlog.get_logger("nv_eval.agents.slurm.poller")

Category = Literal["queued", "running", "succeeded", "failed", "resubmit", "cancelled", "oom"]

# exact mapping of Slurm's job states (squeue long names, sacct names) to what the agent does
STATE_CATEGORY: dict[str, Category] = {
    "PENDING": "queued",
    "CONFIGURING": "queued",
    "REQUEUED": "queued",
    "REQUEUE_FED": "queued",
    "REQUEUE_HOLD": "queued",
    "RESV_DEL_HOLD": "queued",
    "SPECIAL_EXIT": "failed",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "RESIZING": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "BOOT_FAIL": "resubmit",
    "DEADLINE": "failed",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
    "TIMEOUT": "resubmit",
    "PREEMPTED": "resubmit",
    "NODE_FAIL": "resubmit",
    "OUT_OF_MEMORY": "oom",
}


def category(state: str) -> Category | None:
    """The category of a Slurm state (``CANCELLED by 0`` -> cancelled); None if unknown."""
    word = state.strip().split(" ", 1)[0].rstrip("+").upper()
    return STATE_CATEGORY.get(word)


@dataclass
class JobInfo:
    state: str  # Slurm's own word, e.g. RUNNING, TIMEOUT
    reason: str = ""
    exit_code: int | None = None
    source: str = "squeue"  # squeue | sacct | sacct -c
    seen_at: float = field(default_factory=time.monotonic)


def parse_squeue(out: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for ln in out.splitlines():
        parts = ln.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            jobs[parts[0]] = JobInfo(state=parts[1].strip(), reason=(parts[2] if len(parts) > 2 else "").strip())
    return jobs


def parse_sacct(out: str, source: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for ln in out.splitlines():
        parts = ln.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue  # job steps (123.batch) are not the job
        rc: int | None = None
        if len(parts) > 2 and ":" in parts[2]:
            try:
                rc = int(parts[2].split(":", 1)[0])
            except ValueError:
                rc = None
        word = parts[1].strip().split(" ", 1)[0]
        jobs[parts[0]] = JobInfo(state=word, exit_code=rc, source=source)  # the last line of an id wins
    return jobs


class Poller:
    """Polls Slurm for every watched job id; ``watch`` callers wait on :meth:`changed`."""

    def __init__(self, conn: Conn, interval: float = 5.0) -> None:
        self.conn = conn
        self.interval = interval
        self.watched: dict[str, int] = {}  # slurm id -> number of watchers
        self.info: dict[str, JobInfo] = {}
        self.polls = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_ok: float = time.monotonic()
        self.last_started = 0.0
        self._inflight = False
        self._wake_flag = False
        self._tick = anyio.Event()
        self._wake = anyio.Event()
        self._sacct_plain_ok = True

    # ---------------------------------------------------------------- watchers
    def add(self, slurm_id: str) -> None:
        self.watched[slurm_id] = self.watched.get(slurm_id, 0) + 1

    def remove(self, slurm_id: str) -> None:
        n = self.watched.get(slurm_id, 0) - 1
        if n <= 0:
            self.watched.pop(slurm_id, None)
            self.info.pop(slurm_id, None)
        else:
            self.watched[slurm_id] = n

    def wake(self) -> None:
        """Poll now (e.g. right after a submit or scancel)."""
        self._wake_flag = True
        ev, self._wake = self._wake, anyio.Event()
        ev.set()

    async def next_poll(self, timeout: float) -> None:
        """Wait for the next completed poll (bounded)."""
        ev = self._tick
        with anyio.move_on_after(timeout):
            await ev.wait()

    # ---------------------------------------------------------------- polling
    async def poll_once(self) -> None:
        ids = sorted(self.watched)
        if not ids:
            return
        try:
            r = await self.conn.run(["squeue", "--me", "-h", "-o", "%i|%T|%r"], timeout=30)
            if r.rc != 0:
                raise ConnError(f"squeue failed ({r.rc}): {r.stderr.strip()[:200]}")
            found = parse_squeue(r.stdout)
            now = time.monotonic()
            missing = [i for i in ids if i not in found]
            done = await self._sacct(missing) if missing else {}
            for i in ids:
                if i in found:
                    found[i].seen_at = now
                    self.info[i] = found[i]
                elif i in done:
                    done[i].seen_at = now
                    self.info[i] = done[i]
            self.polls += 1
            self.last_ok = now
            self.last_error = None
        except ConnError as e:
            self.errors += 1
            self.last_error = str(e)
            log.warning("slurm poll failed; job states unchanged", error=str(e))
        finally:
            tick, self._tick = self._tick, anyio.Event()
            tick.set()

    async def _sacct(self, ids: list[str]) -> dict[str, JobInfo]:
        fmt = ["-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(ids)]
        if self._sacct_plain_ok:
            r = await self.conn.run(["sacct", "-X", *fmt], timeout=30)
            if r.rc == 0 and "disabled" not in r.stderr.lower():
                return parse_sacct(r.stdout, "sacct")
            self._sacct_plain_ok = False  # accounting storage off: read the jobcomp file from now on
        r = await self.conn.run(["sacct", "-c", *fmt], timeout=30)
        if r.rc != 0:
            raise ConnError(f"sacct -c failed ({r.rc}): {r.stderr.strip()[:200]}")
        return parse_sacct(r.stdout, "sacct -c")

    async def wait_next(self) -> None:
        """Return after the next poll; the first waiter due performs it, the others share it.

        No background task: whichever ``watch`` is due first runs the ONE squeue call for all
        watched jobs, every other watcher waits for that poll to finish (bounded).
        """
        due = self.last_started + self.interval
        while True:
            if self._inflight:
                await self.next_poll(self.interval + 70)
                return
            now = time.monotonic()
            if now >= due or self._wake_flag:
                self._inflight = True
                self._wake_flag = False
                self.last_started = now
                try:
                    await self.poll_once()
                finally:
                    self._inflight = False
                return
            ev = self._wake
            with anyio.move_on_after(due - now):
                await ev.wait()
