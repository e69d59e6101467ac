"""The base agent loop + local process runtime against a real nats-server and real subprocesses."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from nv_eval.agents import Agent
from nv_eval.agents._heartbeat import agent_version
from nv_eval.agents.local import LocalExecutor
from nv_eval.protocol import (
    CancelJob,
    ControlReply,
    Heartbeat,
    LlamaCppDeployment,
    LogEvent,
    ProgressEvent,
    ResultEvent,
    StatusEvent,
    Subjects,
    VllmDeployment,
    decode,
    encode,
)

from ._agent_helpers import STAND_IN_CMD, EventCollector, make_job, pid_alive, publish_job, setup_bus


@pytest.fixture(autouse=True)
def _stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NV_EVAL_HARNESS_CMD", STAND_IN_CMD)
    monkeypatch.setenv("STANDIN_KEY", "sk-secret-value")


async def _agent(nats_url: str, prefix: str, tmp_path: Path, **kw: object) -> Agent:
    return Agent(
        LocalExecutor(),
        nats_url=nats_url,
        prefix=prefix,
        data_dir=tmp_path / "agent",
        agent_id="a1",
        heartbeat_interval=0.3,
        **kw,  # type: ignore[arg-type]
    )


async def test_job_runs_and_events_arrive_in_order(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 4})
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "terminal status")
        tg.cancel_scope.cancel()
    await nc.close()

    evs = col.of(job.job_id)
    seqs = [e.seq for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1, seqs
    assert all(e.msg_id == f"{job.job_id}:{e.seq}" and e.source == "a1" for e in evs)
    assert col.states(job.job_id) == ["running", "succeeded"]
    kinds = [type(e).__name__ for e in evs]
    assert kinds.index("StatusEvent") < kinds.index("ProgressEvent") < kinds.index("ResultEvent")
    assert kinds[-1] == "StatusEvent"
    progress = [e for e in evs if isinstance(e, ProgressEvent)]
    # progress lines of one poll are coalesced: increasing, ending with the last one
    dones = [p.done for p in progress]
    assert dones == sorted(set(dones)) and progress[-1].done == progress[-1].total == 4
    (result,) = [e for e in evs if isinstance(e, ResultEvent)]
    assert result.results.metrics["acc"].value == 0.5
    assert result.results.endpoint_url == "http://127.0.0.1:9/v1/completions"
    logs = [ln for e in evs if isinstance(e, LogEvent) for ln in e.lines]
    assert "step 4/4" in logs and "key set: True" in logs[0]
    assert not any("sk-secret-value" in ln for ln in logs)
    task_dir = Path(job.task_dir)
    assert (task_dir / "logs" / "stdout.log").read_text().count('"progress"') == 4
    assert (task_dir / "logs" / "exit_code").read_text().strip() == "0"
    assert (task_dir / "results.json").exists()
    # the api key travels by NAME on the command line, never by value
    state = (tmp_path / "agent" / "jobs" / f"{job.job_id}.json").read_text()
    assert "sk-secret-value" not in state and '"state":"succeeded"' in state


async def test_harness_exit_2_fails_with_last_stderr_line(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1, "exit": 2})
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "terminal status")
        tg.cancel_scope.cancel()
    await nc.close()
    term = col.terminal(job.job_id)
    assert term is not None and term.state == "failed"
    assert term.failure_kind == "evaluation" and term.exit_code == 2
    assert term.message == "fatal: stand-in failure with code 2"


async def test_malformed_job_message_does_not_kill_agent(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1})
    agent = await _agent(nats_url, prefix, tmp_path)
    subj = Subjects(prefix).jobs("local")
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await js.publish(subj, b"{not json")
        await js.publish(subj, b'{"job_id": 5}')
        await js.publish(subj, b"\xff\xfe")
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "terminal status after junk")
        # a malformed control request gets an error reply, the agent keeps serving
        rep = decode((await nc.request(Subjects(prefix).control("a1"), b"[1,2", timeout=5)).data, ControlReply)
        assert not rep.ok and rep.error
        tg.cancel_scope.cancel()
    # the junk was terminated: nothing left for the consumer
    info = await js.consumer_info(Subjects(prefix).jobs_stream, Subjects(prefix).jobs_consumer("local"))
    assert info.num_pending == 0 and info.num_ack_pending == 0
    await nc.close()
    assert col.terminal(job.job_id).state == "succeeded"  # type: ignore[union-attr]


async def test_cancel_stops_process_within_5s(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1000, "step_s": 0.1})
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: any(isinstance(e, ProgressEvent) for e in col.of(job.job_id)), 20, "progress")
        pid = int((Path(job.task_dir) / "launches.txt").read_text().split()[0])
        assert pid_alive(pid)
        t0 = anyio.current_time()
        req = CancelJob(job_id=job.job_id, reason="killed by test")
        rep = decode((await nc.request(Subjects(prefix).control("a1"), encode(req), timeout=5)).data, ControlReply)
        assert rep.ok
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 5, "killed status")
        assert anyio.current_time() - t0 < 5
        assert not pid_alive(pid)
        # cancelling an unknown job is answered with an error
        req2 = CancelJob(job_id="0123456789abcdef.9")
        rep2 = decode((await nc.request(Subjects(prefix).control("a1"), encode(req2), timeout=5)).data, ControlReply)
        assert not rep2.ok
        tg.cancel_scope.cancel()
    await nc.close()
    term = col.terminal(job.job_id)
    assert term is not None and term.state == "killed" and term.message == "killed by test"


async def test_cancelled_in_kv_before_start_is_killed_without_launch(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1})
    kv = await js.key_value(Subjects(prefix).cancel_bucket)
    await kv.put(job.job_id, b"killed")
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "killed status")
        tg.cancel_scope.cancel()
    await nc.close()
    assert col.states(job.job_id) == ["killed"]
    assert not (Path(job.task_dir) / "launches.txt").exists()


async def test_heartbeat_reports_capabilities_and_running_jobs(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    beats: list[Heartbeat] = []

    async def cb(msg: object) -> None:
        beats.append(decode(msg.data, Heartbeat))  # type: ignore[attr-defined]

    await nc.subscribe(Subjects(prefix).heartbeats_all(), cb=cb)
    job = make_job(tmp_path, extra={"steps": 30, "step_s": 0.1})
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        with anyio.fail_after(15):
            while not any(job.job_id in b.running_jobs for b in beats):
                await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    b = beats[-1]
    assert b.agent_id == "a1" and b.executor == "local" and b.pool == "default"
    assert "process" in b.capabilities and b.version == agent_version() != "0"
    # the agent stopped, its job keeps running detached; stop it
    cancel_agent = await _agent(nats_url, prefix, tmp_path)
    col = EventCollector()
    await col.start(js, prefix)
    async with anyio.create_task_group() as tg:
        await tg.start(cancel_agent.run)
        await nc.request(Subjects(prefix).control("a1"), encode(CancelJob(job_id=job.job_id)), timeout=5)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 10, "killed")
        tg.cancel_scope.cancel()
    await nc.close()


async def test_non_llamacpp_deployment_needs_docker(nats_url: str, prefix: str, tmp_path: Path) -> None:
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, endpoint_url=None, deployment=VllmDeployment(image="vllm/vllm-openai"))
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "failed status")
        tg.cancel_scope.cancel()
    await nc.close()
    term = col.terminal(job.job_id)
    assert isinstance(term, StatusEvent) and term.state == "failed"
    assert term.message == "deployment type vllm needs the docker runtime (set execution.runtime=docker)"


async def test_llamacpp_port_in_use_fails_clearly(nats_url: str, prefix: str, tmp_path: Path) -> None:
    import socket

    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        job = make_job(tmp_path, endpoint_url=None, deployment=LlamaCppDeployment(port=port))
        agent = await _agent(nats_url, prefix, tmp_path)
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            await publish_job(js, prefix, job)
            await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "failed status")
            tg.cancel_scope.cancel()
    await nc.close()
    term = col.terminal(job.job_id)
    assert term is not None and term.state == "failed" and f"port {port}" in (term.message or "")
    assert col.states(job.job_id) == ["deploying", "failed"]


async def test_relative_output_dir_is_resolved_against_the_agent_cwd(
    nats_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msgspec

    monkeypatch.chdir(tmp_path)
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1})
    rel = msgspec.structs.replace(
        job, task_dir=f"results/{job.invocation_id}/t0", invocation_dir=f"results/{job.invocation_id}"
    )
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, rel)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 20, "terminal status")
        tg.cancel_scope.cancel()
    await nc.close()
    assert col.terminal(job.job_id).state == "succeeded", col.dump()  # type: ignore[union-attr]
    assert (tmp_path / "results" / job.invocation_id / "t0" / "results.json").exists()


async def test_cancel_written_to_the_bucket_stops_a_running_job(nats_url: str, prefix: str, tmp_path: Path) -> None:
    """No control request at all: the cancel bucket alone stops a job already running."""
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(tmp_path, extra={"steps": 1000, "step_s": 0.1})
    agent = await _agent(nats_url, prefix, tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: any(isinstance(e, ProgressEvent) for e in col.of(job.job_id)), 20, "progress")
        pid = int((Path(job.task_dir) / "launches.txt").read_text().split()[0])
        kv = await js.key_value(Subjects(prefix).cancel_bucket)
        await kv.put(job.job_id, b"killed")
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 5, "killed status")
        assert not pid_alive(pid)
        tg.cancel_scope.cancel()
    await nc.close()
    assert col.terminal(job.job_id).state == "killed"  # type: ignore[union-attr]
