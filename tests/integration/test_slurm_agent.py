"""The real agent (``python -m nv_eval.agents --executor slurm``) against real NATS, the real
sshd (remote mode), the real single-node Slurm and the real SmolLM2 endpoint: a job runs to
a result, a job is killed through the control subject (gone from Slurm, ``killed``), and an
agent SIGKILLed while a job runs is restarted and follows it to the end without resubmitting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from nv_eval.protocol import CancelJob, ControlReply, LogEvent, ResultEvent, Subjects, TaskParams, decode, encode

from tests._support import slurm as support
from tests._support.slurm import slurm_job, squeue_ids

from ._agent_helpers import EventCollector, publish_job, setup_bus

pytestmark = [pytest.mark.slurm, pytest.mark.sshd, pytest.mark.model, pytest.mark.timeout(400)]

slurm_cluster = support.slurm_cluster
sshd_login = support.sshd_login


def start_agent(nats_url: str, prefix: str, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "agent.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "nv_eval.agents", "--executor", "slurm", "--nats-url", nats_url, "--prefix", prefix,
         "--data-dir", str(data_dir), "--agent-id", "slurm1", "--heartbeat-interval", "0.5"],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


async def test_agent_runs_kills_and_reattaches_slurm_jobs(
    nats_url: str, prefix: str, smollm2: Any, slurm_cluster: str, sshd_login: dict[str, Any], tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    data = tmp_path / "agent"
    agent = start_agent(nats_url, prefix, data)
    try:
        ok = slurm_job(tmp_path, endpoint_url=smollm2.url, params=TaskParams(limit_samples=2), **sshd_login)
        doomed = slurm_job(tmp_path, task="sleepy", harness_command="bash -c 'sleep 300'", **sshd_login)
        await publish_job(js, prefix, ok, executor="slurm")
        await publish_job(js, prefix, doomed, executor="slurm")

        await col.wait_for(lambda: "running" in col.states(doomed.job_id), 120, "sleepy running")
        sid = next(
            e.lines[0].split()[3] for e in col.of(doomed.job_id)
            if isinstance(e, LogEvent) and e.lines and e.lines[0].startswith("submitted Slurm job")
        )  # fmt: skip
        assert sid in squeue_ids()
        rep = decode(
            (await nc.request(Subjects(prefix).control("slurm1"), encode(CancelJob(job_id=doomed.job_id)), timeout=10)).data,
            ControlReply,
        )
        assert rep.ok, rep.error
        await col.wait_for(lambda: col.terminal(doomed.job_id) is not None, 30, "killed")
        assert col.terminal(doomed.job_id).state == "killed"  # type: ignore[union-attr]
        assert sid not in squeue_ids()

        await col.wait_for(lambda: col.terminal(ok.job_id) is not None, 300, "the real job to end")
        assert col.terminal(ok.job_id).state == "succeeded", col.dump()  # type: ignore[union-attr]
        res = [e for e in col.of(ok.job_id) if isinstance(e, ResultEvent)]
        assert len(res) == 1 and res[0].results.n_samples == 2

        # restart: SIGKILL the agent while a job runs, start it again, the job is followed to its end
        results_src = Path(ok.task_dir) / "results.json"
        later = slurm_job(tmp_path, task="later", **sshd_login)
        dest = Path(later.task_dir) / "results.json"
        later = slurm_job(
            tmp_path,
            task="later",
            invocation_id=later.invocation_id,
            harness_command=f"bash -c 'sleep 8 && cp {results_src} {dest}'",
            **sshd_login,
        )
        await publish_job(js, prefix, later, executor="slurm")
        await col.wait_for(lambda: "running" in col.states(later.job_id), 120, "later running")
        stop(agent, signal.SIGKILL)
        agent = start_agent(nats_url, prefix, data)
        await col.wait_for(lambda: col.terminal(later.job_id) is not None, 120, "later to end after the restart")
        assert col.terminal(later.job_id).state == "succeeded", col.dump()  # type: ignore[union-attr]
        submits = [
            e for e in col.of(later.job_id)
            if isinstance(e, LogEvent) and any(ln.startswith("submitted Slurm job") for ln in e.lines)
        ]  # fmt: skip
        assert len(submits) == 1  # re-attached, never resubmitted
    finally:
        stop(agent)
        await nc.close()
    _ = anyio
