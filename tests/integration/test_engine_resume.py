"""Kill a process mid-run with SIGKILL, rerun it with the same cache: identical results, and the
server never sees again a request whose reply the killed run had reported.

The client is a real subprocess running :class:`RequestEngine` with a cache dir against a real
aiohttp server (this test's loop). What at-most-once means here, exactly: the engine reports a
reply (yields it) only after its cache row committed, so every request reported by a killed
run is never sent again; a request may be re-sent only if it was in flight or received but not
yet committed at the kill — at most ``parallelism`` + two commit batches.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nv_eval.harness._cache import BATCH_ROWS, DB_NAME
from nv_eval.harness._cache import request_key as cache_key

from tests._support.faulty_endpoint import FaultyEndpoint, completions_reply
from tests._support.faulty_endpoint import request_key as server_key

pytestmark = pytest.mark.timeout(180)

N = 3000
PARALLELISM = 8
REPO = Path(__file__).resolve().parents[2]

CLIENT = """
import asyncio, json, sys
from nv_eval.harness._engine import EngineConfig, RequestEngine
from tests.integration.test_engine_resume import workload

async def main(base, cache, n, out):
    cfg = EngineConfig(parallelism=int(sys.argv[5]), backoff_base=0.01)
    async with RequestEngine(base, None, cfg, cache_dir=cache) as engine:
        results = {}
        async for i, reply in engine.map(workload(n), total=n):
            results[i] = reply
            sys.stdout.write(f"{i}\\n")
            sys.stdout.flush()
    with open(out, "w") as f:
        json.dump({"results": results, "stats": engine.stats.as_dict()}, f)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
"""


def workload(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(n):
        yield (
            "/completions",
            {
                "model": "faulty-model",
                "prompt": f"Item {i}: the context of a loglikelihood request. Choice {i % 4}",
                "echo": True,
                "logprobs": 1,
                "max_tokens": 1,
            },
        )


async def run_client(base_url: str, cache: Path, out: Path, kill_after: int | None) -> set[int]:
    """Run the client; SIGKILL it after ``kill_after`` newly reported replies. Returns what it reported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, base_url, str(cache), str(N), str(out), str(PARALLELISM),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    reported: set[int] = set()
    killed = False
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                break
            reported.add(int(line))
            if kill_after is not None and not killed and len(reported) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                killed = True  # keep draining: lines already written were reported
        rc = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode()
    if kill_after is None:
        assert rc == 0, err
    else:
        assert killed and rc == -signal.SIGKILL, f"rc={rc}: {err}"
    return reported


def cache_rows(cache: Path) -> set[bytes]:
    with sqlite3.connect(f"file:{cache / DB_NAME}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {bytes(k) for (k,) in conn.execute("SELECT key FROM responses")}


async def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    bodies = [body for _, body in workload(N)]
    skey = [server_key("/v1/completions", b) for b in bodies]
    ckey = [cache_key("/completions", b) for b in bodies]
    cache = tmp_path / "cache"
    out = tmp_path / "results.json"
    async with FaultyEndpoint(latency_s=0.002) as ep:
        # run 1 and run 2 are killed after some replies each; run 3 finishes
        snapshots: list[Counter[str]] = []
        reported_runs: list[set[int]] = []
        rows_before_final = set()
        for kill_after in (700, 1400, None):
            if kill_after is None:
                rows_before_final = cache_rows(cache)
            reported = await run_client(ep.base_url, cache, out, kill_after)
            snapshots.append(Counter(ep.counts))
            reported_runs.append(reported)
            if kill_after is not None:
                assert len(reported) < N, "the kill came too late to be mid-run"
                rows = cache_rows(cache)
                # every reply the killed run reported is durable in the cache
                assert {ckey[i] for i in reported} <= rows

    final = snapshots[-1]
    # nothing reported by a killed run was ever sent again
    for run, reported in enumerate(reported_runs[:-1]):
        for i in reported:
            assert final[skey[i]] == snapshots[run][skey[i]], f"request {i} re-sent after being reported"
    # re-sent requests are only those in flight / uncommitted at a kill
    resent = sum(final.values()) - N
    assert 0 <= resent <= 2 * (PARALLELISM + 2 * BATCH_ROWS)
    assert set(final) == set(skey)
    # the final run sent exactly what the cache lacked, and its results equal the clean replies
    data = json.loads(out.read_text())
    assert data["stats"]["cached_requests"] == len(rows_before_final)
    assert data["stats"]["requests"] == N - len(rows_before_final)
    assert sum(final.values()) - sum(snapshots[-2].values()) == N - len(rows_before_final)
    assert len(data["results"]) == N
    for i, body in enumerate(bodies):
        assert data["results"][str(i)] == json.loads(json.dumps(completions_reply(body)))
