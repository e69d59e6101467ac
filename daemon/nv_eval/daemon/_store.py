"""SQLite state of the daemon: invocations, jobs and the fold of the event stream into them.

One connection, used from the event loop only (every statement takes well under a millisecond
at our sizes). WAL journal, ``synchronous=NORMAL``: a committed transaction survives a killed
process. The fold (:meth:`Store.apply`) is idempotent: it skips an event whose stream sequence
was already applied or whose message id was already seen, so replaying the stream is harmless.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from nv_eval.protocol import (
    TERMINAL_STATES,
    DeploymentEvent,
    Event,
    InvocationRecord,
    JobRecord,
    JobSpec,
    LogEvent,
    ProgressEvent,
    ProgressInfo,
    ResultEvent,
    StatusEvent,
    event_msg_id,
    executor_name,
    is_id_prefix,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    invocation_id TEXT PRIMARY KEY,
    executor TEXT NOT NULL,
    model_id TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_created ON invocations(created_at);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    invocation_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    agent_id TEXT,
    attempt INTEGER NOT NULL,
    record BLOB NOT NULL,
    spec BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_invocation ON jobs(invocation_id, idx);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS applied (msg_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

ACTIVE_STATES = frozenset({"pending", "dispatched", "deploying", "running", "lost"})

_enc = msgspec.json.Encoder()
_rec_dec = msgspec.json.Decoder(JobRecord)
_spec_dec = msgspec.json.Decoder(JobSpec)


class LookupError_(LookupError):
    """Base of id resolution errors (message is one line, ready for an ApiError)."""


class NotFound(LookupError_):
    pass


class Ambiguous(LookupError_):
    pass


class BadId(LookupError_):
    pass


@dataclass(frozen=True)
class Applied:
    """What :meth:`Store.apply` did with one event."""

    applied: bool
    reason: str = ""
    job: JobRecord | None = None
    previous_state: str | None = None


def invocation_state(jobs: Sequence[JobRecord]) -> str:
    """pending | running | succeeded | failed | killed, derived from the jobs."""
    if not jobs:
        return "pending"
    states = [j.state for j in jobs]
    if any(s not in TERMINAL_STATES for s in states):
        return "pending" if all(s in ("pending", "dispatched") for s in states) else "running"
    if "killed" in states:
        return "killed"
    if "failed" in states:
        return "failed"
    return "succeeded"


class Store:
    """The daemon's materialized state."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writes

    def add_invocation(self, specs: Sequence[JobSpec], model_id: str, output_dir: str, now: float) -> InvocationRecord:
        """Persist a new invocation and its jobs (state ``pending``) in one transaction."""
        first = specs[0]
        executor = executor_name(first.execution)
        with self._tx():
            self._db.execute(
                "INSERT INTO invocations VALUES (?,?,?,?,?)",
                (first.invocation_id, executor, model_id, output_dir, now),
            )
            for s in specs:
                rec = JobRecord(
                    job_id=s.job_id,
                    invocation_id=s.invocation_id,
                    index=s.index,
                    task=s.task.name,
                    executor=executor,
                    state="pending",
                    task_dir=s.task_dir,
                    attempt=s.attempt,
                    created_at=now,
                    updated_at=now,
                )
                self._db.execute(
                    "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?)",
                    (s.job_id, s.invocation_id, s.index, "pending", None, s.attempt, _enc.encode(rec), _enc.encode(s)),
                )
        inv = self.invocation(first.invocation_id)
        assert inv is not None
        return inv

    def _put_job(self, rec: JobRecord) -> None:
        self._db.execute(
            "UPDATE jobs SET state=?, agent_id=?, attempt=?, record=? WHERE job_id=?",
            (rec.state, rec.agent_id, rec.attempt, _enc.encode(rec), rec.job_id),
        )

    def set_spec(self, spec: JobSpec) -> None:
        with self._tx():
            self._db.execute("UPDATE jobs SET spec=? WHERE job_id=?", (_enc.encode(spec), spec.job_id))

    def apply(self, ev: Event, *, stream_seq: int | None = None, now: float | None = None) -> Applied:
        """Fold one event into the state (idempotent; see the module docstring)."""
        now = time.time() if now is None else now
        msg_id = ev.msg_id or event_msg_id(ev.job_id, ev.seq)
        with self._tx():
            if stream_seq is not None:
                last = int(self._meta("last_stream_seq") or 0)
                if stream_seq <= last:
                    return Applied(False, "already applied (stream sequence)")
                self._set_meta("last_stream_seq", str(stream_seq))
            if not isinstance(ev, LogEvent):
                if self._db.execute("SELECT 1 FROM applied WHERE msg_id=?", (msg_id,)).fetchone():
                    return Applied(False, "duplicate message id")
                self._db.execute("INSERT INTO applied VALUES (?)", (msg_id,))
            rec = self.job(ev.job_id)
            if rec is None:
                return Applied(False, "unknown job")
            prev = rec.state
            rec.last_seq = max(rec.last_seq, ev.seq)
            changed, reason = _fold(rec, ev, now)
            if changed:
                rec.updated_at = now
            self._put_job(rec)
            return Applied(changed, reason, rec, prev)

    # ------------------------------------------------------------------ reads

    def job(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT record FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return _rec_dec.decode(row[0]) if row else None

    def spec(self, job_id: str) -> JobSpec | None:
        row = self._db.execute("SELECT spec FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return _spec_dec.decode(row[0]) if row else None

    def jobs_of(self, invocation_id: str) -> list[JobRecord]:
        rows = self._db.execute("SELECT record FROM jobs WHERE invocation_id=? ORDER BY idx", (invocation_id,))
        return [_rec_dec.decode(r[0]) for r in rows]

    def jobs_in_states(self, states: Iterable[str]) -> list[JobRecord]:
        st = list(states)
        q = f"SELECT record FROM jobs WHERE state IN ({','.join('?' * len(st))}) ORDER BY invocation_id, idx"
        return [_rec_dec.decode(r[0]) for r in self._db.execute(q, st)]

    def invocation(self, invocation_id: str) -> InvocationRecord | None:
        row = self._db.execute(
            "SELECT invocation_id, executor, model_id, output_dir, created_at FROM invocations WHERE invocation_id=?",
            (invocation_id,),
        ).fetchone()
        if row is None:
            return None
        jobs = self.jobs_of(invocation_id)
        return InvocationRecord(
            invocation_id=row[0],
            state=invocation_state(jobs),
            executor=row[1],
            model_id=row[2],
            output_dir=row[3],
            created_at=row[4],
            jobs=jobs,
        )

    def list_invocations(self, since: float | None, limit: int) -> list[InvocationRecord]:
        rows = self._db.execute(
            "SELECT invocation_id FROM invocations WHERE created_at >= ? ORDER BY created_at DESC LIMIT ?",
            (since or 0.0, max(0, limit)),
        ).fetchall()
        out = [self.invocation(r[0]) for r in rows]
        return [i for i in out if i is not None]

    def resolve(self, text: str) -> tuple[str, str | None]:
        """Map an invocation id, a job id or a unique prefix of one to ``(invocation_id, job_id | None)``."""
        text = text.strip().lower()
        if not text or not is_id_prefix(text):
            raise BadId(f"not an invocation or job id: {text!r} (expected up to 16 hex chars, optionally .<n>)")
        if "." in text:
            inv, _, n = text.partition(".")
            if len(inv) != 16:
                raise NotFound(f"no job matches {text!r}")
            exact = self._db.execute("SELECT invocation_id FROM jobs WHERE job_id=?", (text,)).fetchone()
            if exact:
                return exact[0], text
            rows = self._db.execute(
                "SELECT job_id, invocation_id FROM jobs WHERE invocation_id=? AND CAST(idx AS TEXT) LIKE ? ORDER BY idx",
                (inv, n + "%"),
            ).fetchall()
            if not rows:
                raise NotFound(f"no job matches {text!r}")
            if len(rows) > 1:
                raise Ambiguous(_ambiguous(text, [r[0] for r in rows]))
            return rows[0][1], rows[0][0]
        rows = self._db.execute(
            "SELECT invocation_id FROM invocations WHERE invocation_id >= ? AND invocation_id < ? ORDER BY created_at",
            (text, text + "g"),
        ).fetchall()
        if not rows:
            raise NotFound(f"no invocation matches {text!r}")
        if len(rows) > 1:
            exact = [r[0] for r in rows if r[0] == text]
            if exact:
                return exact[0], None
            raise Ambiguous(_ambiguous(text, [r[0] for r in rows]))
        return rows[0][0], None

    # ------------------------------------------------------------------ helpers

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._set_meta(key, value)

    def set_last_stream_seq(self, seq: int) -> None:
        self.set_meta("last_stream_seq", str(seq))

    def last_stream_seq(self) -> int:
        return int(self._meta("last_stream_seq") or 0)

    def _tx(self) -> _Tx:
        return _Tx(self)

    def batch(self) -> _Tx:
        """One transaction around many :meth:`apply` calls (nested transactions join it)."""
        return _Tx(self)


class _Tx:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); nested uses join the outer transaction."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> None:
        if self._store._depth == 0:
            self._store._db.execute("BEGIN IMMEDIATE")
        self._store._depth += 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._store._depth -= 1
        if self._store._depth == 0:
            self._store._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _ambiguous(text: str, candidates: list[str]) -> str:
    shown = ", ".join(candidates[:10]) + (f", … ({len(candidates)} in all)" if len(candidates) > 10 else "")
    return f"{text!r} is ambiguous: it matches {shown}"


def _fold(rec: JobRecord, ev: Event, now: float) -> tuple[bool, str]:
    """Apply one event to a job record in place; return (changed, why-not)."""
    if isinstance(ev, StatusEvent):
        if ev.attempt < rec.attempt:
            return False, f"stale attempt {ev.attempt} < {rec.attempt}"
        if ev.attempt == rec.attempt:
            if rec.state in TERMINAL_STATES:
                return False, f"status {ev.state} after terminal {rec.state}"
            if rec.state == "lost" and ev.source != "daemon":
                return False, f"status {ev.state} from {ev.source} after the job was declared lost"
        if ev.attempt > rec.attempt or ev.state == "dispatched":
            rec.attempt = ev.attempt
            rec.agent_id = None
            rec.message = rec.failure_kind = rec.exit_code = None
            rec.started_at = rec.finished_at = None
            rec.progress = None
        rec.state = ev.state
        rec.message = ev.message
        rec.failure_kind = ev.failure_kind
        rec.exit_code = ev.exit_code
        if ev.source != "daemon":
            rec.agent_id = ev.source
        if ev.state == "running" and rec.started_at is None:
            rec.started_at = ev.ts
        if ev.state in TERMINAL_STATES:
            rec.finished_at = ev.ts
        return True, ""
    if isinstance(ev, ProgressEvent):
        if rec.state in TERMINAL_STATES:
            return False, "progress after terminal state"
        rec.progress = ProgressInfo(ev.done, ev.total, ev.rps, ev.eta_s)
        if ev.source != "daemon" and rec.agent_id is None:
            rec.agent_id = ev.source
        return True, ""
    if isinstance(ev, ResultEvent):
        rec.metrics = dict(ev.results.metrics)
        return True, ""
    if isinstance(ev, DeploymentEvent):
        return False, "deployment events are not folded"
    return False, "log events are not stored"
