"""Persistent request cache: SQLite (WAL) in ``<cache_dir>/requests.sqlite``.

Key: sha256 of the canonical JSON (sorted keys, no whitespace) of ``[path, body]`` with the
non-semantic body fields (:data:`NON_SEMANTIC_FIELDS`) removed. Value: the response body bytes
exactly as the endpoint returned them (so a rerun decodes the very same bytes).

Writes are gathered in the event loop thread and handed to one background committer thread a
batch at a time: a batch goes when it is :data:`BATCH_SECONDS` old or holds :data:`BATCH_ROWS`
rows (the committer merges batches that queue up while it commits). Only *after* a row's batch
has committed is the caller's ``on_committed`` callback invoked (the engine reports a
request as completed only then). With ``journal_mode=WAL`` + ``synchronous=NORMAL`` a
committed transaction survives a SIGKILL of the process (it is in the WAL, recovered on the
next open), and SQLite's journalling means a kill at any instant never corrupts the file.

Loss bound on SIGKILL: only responses received but not yet committed, i.e. at most the rows
of the open batch (≤ ``BATCH_ROWS``, ≤ ``BATCH_SECONDS`` worth) plus the batches queued for or
being committed at that instant (each ≤ ``BATCH_ROWS``; in practice one). None of those had been reported as completed, so "every request
reported completed is never sent again" holds exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

DB_NAME = "requests.sqlite"
BATCH_SECONDS = 0.05
BATCH_ROWS = 512
# Body fields that do not change the reply: excluded from the key so that e.g. a different
# ``user`` tag or streaming flag still hits the cache.
NON_SEMANTIC_FIELDS = frozenset({"user", "stream", "stream_options", "request_id", "metadata"})

_encoder = msgspec.json.Encoder(order="sorted")

CommitCallback = Callable[[list[Any]], None]
"""Called in the writer thread with the ``token`` of every row of a batch once it committed
(or with exceptions in place of tokens' delivery if the commit failed — see ``on_error``)."""


def request_key(path: str, body: Mapping[str, Any]) -> bytes:
    """The 32-byte cache key of a request."""
    if NON_SEMANTIC_FIELDS.isdisjoint(body):
        canon = _encoder.encode([path, body])
    else:
        canon = _encoder.encode([path, {k: v for k, v in body.items() if k not in NON_SEMANTIC_FIELDS}])
    return hashlib.sha256(canon).digest()


class CacheError(Exception):
    """The request cache could not be opened or written."""


_STOP = object()


class RequestCache:
    """Read from the calling (event loop) thread; write-behind from one committer thread.

    ``put(key, value, token)`` queues a row; once its batch commits, ``on_committed(tokens)``
    runs in the committer thread (the engine hops back to its loop with
    ``call_soon_threadsafe``). ``on_error(tokens, exc)`` runs instead if the commit failed.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        on_committed: CommitCallback,
        on_error: Callable[[list[Any], BaseException], None],
    ) -> None:
        self.path = Path(cache_dir) / DB_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._reader = self._connect(check_same_thread=False)
            self._reader.execute(
                "CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
            self._reader.commit()
            self._writer = self._connect(check_same_thread=False)
        except (sqlite3.Error, OSError) as e:
            raise CacheError(f"request cache {self.path}: {e}") from e
        self._on_committed = on_committed
        self._on_error = on_error
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: list[tuple[bytes, bytes, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="nv-eval-cache-writer", daemon=True)
        self._thread.start()
        self.batches_committed = 0

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=check_same_thread, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.isolation_level = "DEFERRED"
        return conn

    def get(self, key: bytes) -> bytes | None:
        row = self._reader.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def __len__(self) -> int:
        return int(self._reader.execute("SELECT count(*) FROM responses").fetchone()[0])

    def is_empty(self) -> bool:
        return self._reader.execute("SELECT 1 FROM responses LIMIT 1").fetchone() is None

    def put(self, key: bytes, value: bytes, token: Any) -> None:
        """Queue a row (call from the event loop thread); ``token`` goes to ``on_committed`` once durable.

        Rows are gathered here and handed to the committer one batch at a time (a thread wake-up
        per row would cost more than the request), after :data:`BATCH_SECONDS` or at
        :data:`BATCH_ROWS` rows, whichever comes first.
        """
        pending = self._pending
        pending.append((key, value, token))
        if len(pending) >= BATCH_ROWS:
            self.flush()
        elif len(pending) == 1:
            self._timer = asyncio.get_running_loop().call_later(BATCH_SECONDS, self.flush)

    def flush(self) -> None:
        """Hand the gathered rows to the committer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            self._q.put(batch)

    def _run(self) -> None:
        q = self._q
        while True:
            batch = q.get()
            if batch is _STOP:
                return
            stop = False
            while len(batch) < BATCH_ROWS * 4:  # merge what else is waiting into one transaction
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch = batch + more
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[bytes, bytes, Any]]) -> None:
        tokens = [t for _, _, t in batch]
        try:
            with self._writer:
                self._writer.executemany(
                    "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", [(k, v) for k, v, _ in batch]
                )
        except BaseException as e:  # noqa: BLE001 - delivered to the waiting requests
            self._on_error(tokens, CacheError(f"request cache {self.path}: {e}"))
            return
        self.batches_committed += 1
        self._on_committed(tokens)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the committer (bounded wait) and close both connections.

        Call :meth:`flush` from the loop thread first (the engine does)."""
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise CacheError(f"request cache {self.path}: committer did not finish within {timeout}s")
        self._writer.close()
        self._reader.close()
