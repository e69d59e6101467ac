"""Batched submission: launches arriving together share ONE remote command running sbatch
for each script in turn (one SSH channel and one remote shell instead of one per job).

The first caller waits ``window`` seconds, takes every pending submission with the same
secret NAMES, and runs them; the other callers await their own line of the output
(``OK <id>`` or ``ERR <message>``). Secret values travel on stdin (see ``with_secrets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from ._conn import Conn, ConnError, with_secrets
from ._script import Paths

# one line per job: OK <sbatch --parsable output> | ERR <sbatch's error, one line>
_LOOP = (
    'while [ "$#" -ge 2 ]; do '
    'if r=$(sbatch --parsable --output="$1" "$2" 2>&1); then printf "OK %s\\n" "$r"; '
    'else printf "ERR %s\\n" "$(printf %s "$r" | tr "\\n" " ")"; fi; shift 2; done'
)


@dataclass
class _Pending:
    paths: Paths
    done: anyio.Event = field(default_factory=anyio.Event)
    line: str | None = None
    error: Exception | None = None


class Submitter:
    def __init__(self, conn: Conn, window: float = 0.05, max_batch: int = 200) -> None:
        self.conn = conn
        self.window = window
        self.max_batch = max_batch
        self._pending: dict[tuple[tuple[str, str], ...], list[_Pending]] = {}
        self.batches = 0

    async def submit(self, paths: Paths, secrets: Mapping[str, str]) -> str:
        key = tuple(sorted(secrets.items()))
        item = _Pending(paths)
        queue = self._pending.setdefault(key, [])
        queue.append(item)
        if len(queue) == 1:  # leader: collect for a moment, then submit everyone queued
            with anyio.CancelScope(shield=True):  # followers depend on it; conn.run is bounded
                await anyio.sleep(self.window)
                while self._pending.get(key):
                    batch = self._pending[key][: self.max_batch]
                    self._pending[key] = self._pending[key][self.max_batch :]
                    await self._run(batch, dict(secrets))
                self._pending.pop(key, None)
        with anyio.fail_after(180):
            await item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.line is not None
        return item.line

    async def _run(self, batch: list[_Pending], secrets: dict[str, str]) -> None:
        args: list[str] = []
        for it in batch:
            args += [it.paths.slurm_out, it.paths.script]
        argv, stdin = with_secrets(["bash", "-c", _LOOP, "nv-eval-submit", *args], secrets)
        self.batches += 1
        self.conn.calls["sbatch"] = self.conn.calls.get("sbatch", 0) + len(batch)
        try:
            r = await self.conn.run(argv, stdin=stdin, timeout=60 + 2 * len(batch))
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("OK ", "ERR "))]
            if len(lines) != len(batch):
                raise ConnError(f"sbatch batch returned {len(lines)} lines for {len(batch)} jobs: {r.stderr.strip()[:200]}")
            for it, ln in zip(batch, lines, strict=True):
                it.line = ln
        except Exception as e:  # noqa: BLE001 - every waiter gets the error
            for it in batch:
                it.error = e
        finally:
            for it in batch:
                it.done.set()
