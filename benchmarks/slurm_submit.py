"""Slurm executor, remote mode: submit 50 per-task jobs over ONE SSH connection, then poll.

Real parts: the sshd of ``scripts/start-sshd.sh`` (127.0.0.1:2222) and the single-node
Slurm of ``scripts/start-slurm.sh``. Each job's "harness" is ``sleep`` so the jobs stay
in the queue for the poll. Prints: wall time of the 50 launches (script upload over SFTP
+ sbatch, all concurrent on one connection; target < 5 s), the number of SSH connections
opened, and the number of ``squeue`` calls one poll of the 50 jobs made (target: 1).
Everything submitted is cancelled at the end (one ``scancel`` with every id).

    .venv/bin/python benchmarks/slurm_submit.py [--jobs 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nv_eval.agents.slurm import SlurmExecutor, SlurmRuntime  # noqa: E402
from nv_eval.protocol import new_invocation_id  # noqa: E402

from tests._support.slurm import RecordingContext, slurm_job, ssh_fields  # noqa: E402


async def one_round(n: int, tmp: Path) -> dict[str, float]:
    inv = new_invocation_id()
    jobs = [
        slurm_job(tmp, task=f"t{i}", index=i, invocation_id=inv, harness_command="bash -c 'sleep 60'", **ssh_fields())
        for i in range(n)
    ]
    ex = SlurmExecutor()
    rt = ex.runtime_for(jobs[0])
    assert isinstance(rt, SlurmRuntime)
    ctxs = [RecordingContext(j) for j in jobs]
    handles: list[dict[str, object]] = []
    try:
        await rt.conn.run(["true"])  # connect first: the figure is about submitting, not the handshake
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:

            async def launch(c: RecordingContext) -> None:
                handles.append(await rt.launch(c))

            for c in ctxs:
                tg.start_soon(launch, c)
        submit_s = time.perf_counter() - t0
        ids = [str(h["slurm_job_id"]) for h in handles]
        for i in ids:
            rt.poller.add(i)
        before = dict(rt.conn.calls)
        t1 = time.perf_counter()
        await rt.poller.poll_once()
        poll_s = time.perf_counter() - t1
        squeue_calls = rt.conn.calls.get("squeue", 0) - before.get("squeue", 0)
        seen = sum(1 for i in ids if i in rt.poller.info)
        await rt.conn.run(["scancel", *ids])
        return {
            "submit_s": submit_s,
            "poll_s": poll_s,
            "squeue_calls": squeue_calls,
            "jobs_seen": seen,
            "connections": float(getattr(rt.conn, "connects", 0)),
        }
    finally:
        await rt.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nveval-slurm-bench-") as d:
        for r in range(args.rounds):
            row = await one_round(args.jobs, Path(d) / str(r))
            rows.append(row)
            print(
                f"round {r + 1}: {args.jobs} jobs submitted in {row['submit_s']:.2f} s "
                f"over {row['connections']:.0f} ssh connection(s); one poll: {row['squeue_calls']:.0f} squeue call(s), "
                f"{row['jobs_seen']:.0f}/{args.jobs} jobs seen, {row['poll_s'] * 1000:.0f} ms"
            )
            await anyio.sleep(2)  # let the cancelled jobs drain
    med = statistics.median(r["submit_s"] for r in rows)
    print(f"median submit time for {args.jobs} jobs: {med:.2f} s (target < 5 s)")


if __name__ == "__main__":
    anyio.run(main)
