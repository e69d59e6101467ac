"""Progress reporting: JSON lines ``{"event":"progress",...}`` on stdout and in ``progress.jsonl``,
throttled to at most four per second (the first and the last always written)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any

MIN_INTERVAL_S = 0.25


class Progress:
    def __init__(self, path: Path, stream: IO[str] | None = None) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._stream = stream or sys.stdout
        self._t0 = time.monotonic()
        self._last_emit = -1.0
        self._last_done = -1

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        self._file.write(line + "\n")
        self._file.flush()
        self._stream.write(line + "\n")
        self._stream.flush()

    def update(self, done: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and done != total and self._last_emit >= 0 and now - self._last_emit < MIN_INTERVAL_S:
            return
        if done == self._last_done and not force:
            return
        elapsed = max(now - self._t0, 1e-9)
        rps = done / elapsed
        eta = (total - done) / rps if rps > 0 else None
        self._write(
            {
                "event": "progress",
                "done": done,
                "total": total,
                "rps": round(rps, 3),
                "eta_s": None if eta is None else round(eta, 1),
            }
        )
        self._last_emit = now
        self._last_done = done

    def done(self, results_path: Path) -> None:
        self._stream.write(json.dumps({"event": "done", "results": str(results_path)}) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._file.close()
