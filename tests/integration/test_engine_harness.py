"""``nv-eval-harness`` (a real process) against the real faulty aiohttp endpoint: the issue's
"Done when" for the engine, at the level of the command.

- Faults (connection resets, 500s, 429 + Retry-After, slow replies) on a fifth of requests:
  results and per-sample records equal the clean run's.
- SIGKILL mid-run, rerun with the same ``--cache-dir``: identical results, and the server sees
  no scoring request again except the few in flight or uncommitted at the kill (bounded: the
  engine reports a reply only after its cache row committed). The probe's requests are not
  cached by design (it checks the live endpoint every run); a last run over a complete cache
  identifies them: it sends nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nv_eval.harness._cache import BATCH_ROWS, DB_NAME

from tests._support.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.timeout(300)

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
MODEL = "faulty-model"


async def harness(
    base_url: str,
    out: Path,
    params: dict[str, Any],
    cache: Path | None = None,
    kill_at_done: int | None = None,
    sig: signal.Signals = signal.SIGKILL,
) -> tuple[int | None, int]:
    """Run the harness; send ``sig`` once a progress line reports ``kill_at_done``. Returns (rc, last done)."""
    cmd = [HARNESS, "run", "--task", "arc_challenge", "--model-id", MODEL, "--endpoint-url", base_url,
           "--endpoint-type", "completions", "--output-dir", str(out), "--params-json", json.dumps(params)]  # fmt: skip
    if cache is not None:
        cmd += ["--cache-dir", str(cache)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ)
    )
    assert proc.stdout is not None and proc.stderr is not None
    done = 0
    try:
        while line := await asyncio.wait_for(proc.stdout.readline(), 120):
            event = json.loads(line)
            if event.get("event") == "progress":
                done = event["done"]
                if kill_at_done is not None and done >= kill_at_done and proc.returncode is None:
                    proc.send_signal(sig)
                    break
        rc = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode()
    if kill_at_done is None:
        assert rc == 0, err[-2000:]
    return rc, done


def outputs(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    results = json.loads((out / "results.json").read_text())
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return results["metrics"], samples, results["usage"]


def cache_rows(cache: Path) -> int:
    with sqlite3.connect(f"file:{cache / DB_NAME}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM responses").fetchone()[0])


async def test_harness_scores_under_faults_equal_the_clean_run(tmp_path: Path) -> None:
    params = {"limit_samples": 80, "parallelism": 8, "max_retries": 5}
    async with FaultyEndpoint() as clean:
        await harness(clean.base_url, tmp_path / "clean", params)
    async with FaultyEndpoint(fault_fraction=0.2, retry_after="0.05", slow_s=0.3) as faulty:
        await harness(faulty.base_url, tmp_path / "faulty", params)
        assert set(faulty.faults) == {"reset", "500", "429", "slow"}
    clean_metrics, clean_samples, _ = outputs(tmp_path / "clean")
    metrics, samples, usage = outputs(tmp_path / "faulty")
    assert usage["retries"] > 0
    assert metrics == clean_metrics
    assert samples == clean_samples


async def test_harness_killed_mid_run_resumes_from_its_cache(tmp_path: Path) -> None:
    params = {"parallelism": 4}  # all 299 ARC-Challenge validation questions, ~1,200 requests
    async with FaultyEndpoint() as clean:
        await harness(clean.base_url, tmp_path / "clean", params)
        n_scoring = sum(clean.counts.values())  # probe included; corrected below
    cache = tmp_path / "cache"
    async with FaultyEndpoint(latency_s=0.01) as ep:
        rc, done1 = await harness(ep.base_url, tmp_path / "run", params, cache, kill_at_done=300)
        assert rc == -signal.SIGKILL
        rows1 = cache_rows(cache)
        assert rows1 >= done1 >= 300  # everything reported done was durable
        after_kill = Counter(ep.counts)
        await harness(ep.base_url, tmp_path / "run", params, cache)
        after_resume = Counter(ep.counts)
        # a run over the complete cache sends only the probe's requests
        await harness(ep.base_url, tmp_path / "again", params, cache)
        probe_keys = {k for k in ep.counts if ep.counts[k] > after_resume[k]}
        assert 1 <= len(probe_keys) <= 5
    n_scoring -= len(probe_keys)
    assert rows1 < n_scoring, "the kill came too late to be mid-run"
    resent = [k for k, c in after_resume.items() if c > 1 and k not in probe_keys]
    assert len(resent) <= 4 + 2 * BATCH_ROWS  # in flight or not yet committed at the kill
    assert len(resent) == sum(after_resume.values()) - sum(after_kill.values()) - len(probe_keys) - (
        n_scoring - sum(1 for k in after_kill if k not in probe_keys)
    )
    assert cache_rows(cache) == n_scoring
    metrics, samples, usage = outputs(tmp_path / "run")
    assert usage["cached_requests"] == rows1
    assert usage["requests"] == n_scoring - rows1 + len(probe_keys)
    clean_metrics, clean_samples, _ = outputs(tmp_path / "clean")
    assert metrics == clean_metrics and samples == clean_samples
    again_metrics, again_samples, again_usage = outputs(tmp_path / "again")
    assert again_usage["cached_requests"] == n_scoring and again_usage["requests"] == len(probe_keys)
    assert again_metrics == clean_metrics and again_samples == clean_samples


async def test_harness_sigterm_keeps_every_received_reply(tmp_path: Path) -> None:
    """SIGTERM (exit 143): the engine commits what it received; only requests in flight are lost."""
    params = {"parallelism": 4}
    cache = tmp_path / "cache"
    async with FaultyEndpoint(latency_s=0.01) as ep:
        rc, done = await harness(ep.base_url, tmp_path / "run", params, cache, kill_at_done=300, sig=signal.SIGTERM)
        assert rc == 143
        sent = len(ep.counts)  # distinct requests the server answered or was answering
        rows = cache_rows(cache)
    assert done >= 300
    probe_max = 5
    assert sent - probe_max - 4 <= rows <= sent  # lost: at most the 4 in flight (+ the uncached probe)
