"""SIGKILL a real agent process mid-job, restart it: it re-attaches (no relaunch, no duplicate logs)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from nv_eval.protocol import CancelJob, ControlReply, LogEvent, ProgressEvent, Subjects, decode, encode

from ._agent_helpers import EventCollector, make_job, pid_alive, publish_job, setup_bus, start_agent_process


def _launches(job_task_dir: str) -> list[int]:
    p = Path(job_task_dir) / "launches.txt"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def _stderr_lines(col: EventCollector, job_id: str) -> list[str]:
    return [ln for e in col.of(job_id) if isinstance(e, LogEvent) and e.stream == "stderr" for ln in e.lines]


@pytest.mark.slow
async def test_sigkilled_agent_reattaches_without_relaunch(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    data = tmp_path / "agent"
    steps = 40
    mid = make_job(tmp_path, extra={"steps": steps, "step_s": 0.1}, index=0)  # running across the restart
    ends = make_job(tmp_path, invocation_id=mid.invocation_id, extra={"steps": 8, "step_s": 0.1}, index=1)
    slow = make_job(tmp_path, invocation_id=mid.invocation_id, extra={"steps": 10000, "step_s": 0.1}, index=2)
    agent = start_agent_process(nats_url, prefix, data, agent_id="ar")
    try:
        for j in (mid, ends, slow):
            await publish_job(js, prefix, j)
        await col.wait_for(
            lambda: all(any(isinstance(e, ProgressEvent) for e in col.of(j.job_id)) for j in (mid, ends, slow)),
            30,
            "progress of every job",
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        # while the agent is down, `ends` finishes (its exit code lands in logs/exit_code)
        with anyio.fail_after(15):
            while not (Path(ends.task_dir) / "logs" / "exit_code").exists():
                await anyio.sleep(0.1)
        assert col.terminal(mid.job_id) is None
        agent = start_agent_process(nats_url, prefix, data, agent_id="ar")
        await col.wait_for(lambda: col.terminal(ends.job_id) is not None, 20, "terminal of the job that ended")
        await col.wait_for(lambda: col.terminal(mid.job_id) is not None, 30, "terminal of the re-attached job")

        # kill on the restarted agent stops the re-attached process within 5 s
        pid = _launches(slow.task_dir)[0]
        assert pid_alive(pid)
        t0 = time.monotonic()
        msg = await nc.request(Subjects(prefix).control("ar"), encode(CancelJob(job_id=slow.job_id)), timeout=5)
        assert decode(msg.data, ControlReply).ok
        await col.wait_for(lambda: col.terminal(slow.job_id) is not None, 5, "killed")
        assert time.monotonic() - t0 < 5 and not pid_alive(pid)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
        await nc.close()

    for j in (mid, ends):
        assert len(_launches(j.task_dir)) == 1, f"{j.job_id} relaunched"
        term = col.terminal(j.job_id)
        assert term is not None and term.state == "succeeded", col.dump()
        evs = col.of(j.job_id)
        seqs = [e.seq for e in evs]
        assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs), seqs
    n = {mid.job_id: steps, ends.job_id: 8}
    for j in (mid, ends):
        lines = [ln for ln in _stderr_lines(col, j.job_id) if ln.startswith("step ")]
        assert lines == [f"step {i}/{n[j.job_id]}" for i in range(1, n[j.job_id] + 1)], lines
    assert col.terminal(slow.job_id).state == "killed"  # type: ignore[union-attr]
    assert col.states(mid.job_id).count("running") == 1
