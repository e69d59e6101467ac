"""The agent against bus trouble: started before NATS is up, NATS restarted under it; bad CLI args."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import nats
import pytest
from nv_eval.agents import Agent
from nv_eval.agents.local import LocalExecutor
from nv_eval.protocol import LogEvent, ProgressEvent

from tests._support.services import free_port, start_nats

from ._agent_helpers import STAND_IN_CMD, EventCollector, make_job, publish_job, setup_bus


@pytest.mark.slow
async def test_agent_waits_for_nats_and_survives_a_nats_restart(
    prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NV_EVAL_HARNESS_CMD", STAND_IN_CMD)
    monkeypatch.setenv("STANDIN_KEY", "x")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    agent = Agent(LocalExecutor(), nats_url=url, prefix=prefix, data_dir=tmp_path / "agent", agent_id="r1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        await anyio.sleep(1.5)  # the agent is retrying the connection: nothing listens yet
        assert not agent.ready.is_set()
        svc = await anyio.to_thread.run_sync(lambda: start_nats(tmp_path / "nats", port=port))
        try:
            nc, js = await setup_bus(url, prefix)
            with anyio.fail_after(20):
                await agent.ready.wait()
            col = EventCollector()
            await col.start(js, prefix)
            first = make_job(tmp_path, extra={"steps": 2}, index=0)
            await publish_job(js, prefix, first)
            await col.wait_for(lambda: col.terminal(first.job_id) is not None, 20, "first job")
            await nc.close()
            # restart the server (same port, same JetStream storage) under the running agent
            await anyio.to_thread.run_sync(svc.stop)
            await anyio.sleep(1.0)
            svc = await anyio.to_thread.run_sync(lambda: start_nats(tmp_path / "nats", port=port))

            nc = await nats.connect(url)
            js = nc.jetstream()
            col2 = EventCollector()
            await col2.start(js, prefix)
            second = make_job(tmp_path, extra={"steps": 2}, index=1, invocation_id=first.invocation_id)
            await publish_job(js, prefix, second)
            await col2.wait_for(lambda: col2.terminal(second.job_id) is not None, 40, "job after NATS restart")
            assert col2.terminal(second.job_id).state == "succeeded"  # type: ignore[union-attr]
            await nc.close()
        finally:
            tg.cancel_scope.cancel()
            await anyio.to_thread.run_sync(svc.stop)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--executor", "nope", "--data-dir", "d"], "unknown executor 'nope'"),
        (["--max-jobs", "0", "--data-dir", "d"], "--max-jobs must be >= 1"),
        (["--heartbeat-interval", "-1", "--data-dir", "d"], "--heartbeat-interval must be > 0"),
        ([], "--data-dir"),
    ],
)
def test_agent_cli_rejects_bad_arguments(args: list[str], msg: str, tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "nv_eval.agents", "--nats-url", "nats://127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
async def test_events_survive_a_bus_outage_and_an_agent_restart(
    prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS goes down mid-job, the job ends during the outage, the agent is stopped; after NATS and the
    agent come back, every log line arrives exactly once and the job ends succeeded (outbox + offsets)."""
    monkeypatch.setenv("NV_EVAL_HARNESS_CMD", STAND_IN_CMD)
    monkeypatch.setenv("STANDIN_KEY", "x")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    svc = await anyio.to_thread.run_sync(lambda: start_nats(tmp_path / "nats", port=port))
    steps = 20
    job = make_job(tmp_path, extra={"steps": steps, "step_s": 0.1})
    try:
        nc, js = await setup_bus(url, prefix)
        col = EventCollector()
        await col.start(js, prefix)
        async with anyio.create_task_group() as tg:
            await tg.start(Agent(LocalExecutor(), nats_url=url, prefix=prefix, data_dir=tmp_path / "a").run)
            await publish_job(js, prefix, job)
            await col.wait_for(lambda: any(isinstance(e, ProgressEvent) for e in col.of(job.job_id)), 20, "progress")
            await nc.close()
            await anyio.to_thread.run_sync(svc.stop)
            with anyio.fail_after(15):
                while not (Path(job.task_dir) / "logs" / "exit_code").exists():
                    await anyio.sleep(0.1)
            t0 = anyio.current_time()
            tg.cancel_scope.cancel()
        assert anyio.current_time() - t0 < 10  # stopping during an outage is bounded
        svc = await anyio.to_thread.run_sync(lambda: start_nats(tmp_path / "nats", port=port))
        nc = await nats.connect(url)
        js = nc.jetstream()
        col = EventCollector()
        await col.start(js, prefix)  # replays the whole events stream
        async with anyio.create_task_group() as tg:
            await tg.start(Agent(LocalExecutor(), nats_url=url, prefix=prefix, data_dir=tmp_path / "a").run)
            await col.wait_for(lambda: col.terminal(job.job_id) is not None, 30, "terminal after the outage")
            tg.cancel_scope.cancel()
        await nc.close()
    finally:
        await anyio.to_thread.run_sync(svc.stop)
    assert col.terminal(job.job_id).state == "succeeded", col.dump()  # type: ignore[union-attr]
    evs = col.of(job.job_id)
    seqs = [e.seq for e in evs]
    assert len(seqs) == len(set(seqs)), seqs
    lines = [ln for e in evs if isinstance(e, LogEvent) and e.stream == "stderr" for ln in e.lines]
    assert [ln for ln in lines if ln.startswith("step ")] == [f"step {i}/{steps}" for i in range(1, steps + 1)]
    assert len((Path(job.task_dir) / "launches.txt").read_text().split()) == 1


def test_second_agent_on_the_same_data_dir_is_refused(nats_url: str, prefix: str, tmp_path: Path) -> None:
    import time

    from ._agent_helpers import start_agent_process

    log = tmp_path / "d" / "agent.log"
    first = start_agent_process(nats_url, prefix, tmp_path / "d", agent_id="one")
    try:
        t0 = time.monotonic()
        while "agent started" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() - t0 < 20, log.read_text()
            time.sleep(0.1)
        p = subprocess.run(
            [sys.executable, "-m", "nv_eval.agents", "--nats-url", nats_url, "--prefix", prefix,
             "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert p.returncode == 2 and "another agent is running with data dir" in p.stderr, p.stderr
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(10)
