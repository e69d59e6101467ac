"""The agent's local persisted state: owned jobs, their handles and per-job event seq.

One JSON file per job under ``<data_dir>/jobs/`` (atomic writes: temp file + fsync +
rename), one file per runtime under ``<data_dir>/runtimes/`` for runtime-wide state (e.g.
shared deployments), and ``<data_dir>/agent.json`` with the agent id, so a restarted agent
keeps its identity and re-attaches to what it left running.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog
from nv_eval.protocol import JobSpec

log = structlog.get_logger("nv_eval.agents.state")

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class DataDirBusy(RuntimeError):
    """Another live agent uses this data dir."""


class JobEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the agent remembers about one job it owns."""

    job: JobSpec
    runtime: str = ""
    handle: dict[str, Any] | None = None
    seq: int = 0  # last event seq used for this job
    launches: int = 0
    launched: bool = False  # the last launch returned its handle (re-attach only then)
    outbox: list[str] = []  # events (JSON) persisted but not yet acknowledged by JetStream
    state: str = "owned"  # owned | launching | running | <terminal state>
    owned_at: float = 0.0
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "killed")


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old or the new content.

    Without ``fsync`` the write survives a process crash (SIGKILL) but not a power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _safe(name: str) -> str:
    return _SAFE.sub("_", name)


class AgentState:
    """Persisted state of one agent (one data dir = one agent)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.jobs_dir = self.dir / "jobs"
        self.runtimes_dir = self.dir / "runtimes"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.runtimes_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, JobEntry] = {}
        self._lock_fd: int | None = None
        self._load()

    # ------------------------------------------------------------------ one agent per data dir
    def lock(self) -> None:
        """Take the data dir's lock (released by ``unlock`` or when the process dies)."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"another agent is running with data dir {self.dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ identity
    def agent_id(self, executor: str, pool: str, explicit: str | None = None) -> str:
        """The agent id: ``explicit`` if given, else the one persisted, else a new one."""
        path = self.dir / "agent.json"
        if explicit:
            atomic_write(path, msgspec.json.encode({"agent_id": explicit}))
            return explicit
        try:
            return str(msgspec.json.decode(path.read_bytes())["agent_id"])
        except (OSError, msgspec.DecodeError, KeyError, TypeError):
            pass
        host = _safe(socket.gethostname().split(".")[0])[:24] or "host"
        aid = f"{executor}-{pool}-{host}-{secrets.token_hex(3)}".replace(".", "_")
        atomic_write(path, msgspec.json.encode({"agent_id": aid}))
        return aid

    # ------------------------------------------------------------------ jobs
    def _load(self) -> None:
        for p in sorted(self.jobs_dir.glob("*.json")):
            try:
                entry = msgspec.json.decode(p.read_bytes(), type=JobEntry)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                log.error("state file unreadable, ignored", path=str(p), error=str(e))
                continue
            self._jobs[entry.job.job_id] = entry

    def _path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{_safe(job_id)}.json"

    def get(self, job_id: str) -> JobEntry | None:
        return self._jobs.get(job_id)

    def add(self, job: JobSpec, runtime: str = "") -> JobEntry:
        entry = JobEntry(job=job, runtime=runtime, owned_at=time.time())
        self._jobs[job.job_id] = entry
        self.save(entry)
        return entry

    def put(self, entry: JobEntry) -> None:
        """Register (or replace) a job entry and persist it."""
        self._jobs[entry.job.job_id] = entry
        self.save(entry)

    def save(self, entry: JobEntry, *, durable: bool = True) -> None:
        """Persist ``entry``; ``durable=False`` skips the fsync (per-event writes: seq, outbox, offsets)."""
        atomic_write(self._path(entry.job.job_id), msgspec.json.encode(entry), fsync=durable)

    def ended_with_outbox(self) -> list[JobEntry]:
        """Ended jobs with events not yet acknowledged (the agent stopped or the bus was down)."""
        return [e for e in self._jobs.values() if e.terminal and e.outbox]

    def live(self) -> list[JobEntry]:
        """Jobs owned and not ended (to re-attach after a restart)."""
        return [e for e in self._jobs.values() if not e.terminal]

    def all(self) -> list[JobEntry]:
        return list(self._jobs.values())

    def prune(self, older_than_s: float = 7 * 86400) -> int:
        """Forget terminal jobs that ended long ago; returns how many were removed."""
        now = time.time()
        gone = [
            jid
            for jid, e in self._jobs.items()
            if e.terminal and not e.outbox and e.finished_at is not None and now - e.finished_at > older_than_s
        ]
        for jid in gone:
            self._jobs.pop(jid, None)
            try:
                self._path(jid).unlink()
            except OSError:
                pass
        return len(gone)

    # ------------------------------------------------------------------ runtime-wide state
    def runtime_state(self, name: str) -> dict[str, Any]:
        path = self.runtimes_dir / f"{_safe(name)}.json"
        try:
            data = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_runtime_state(self, name: str, data: dict[str, Any]) -> None:
        atomic_write(self.runtimes_dir / f"{_safe(name)}.json", msgspec.json.encode(data))
