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
