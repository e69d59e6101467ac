"""Unit tests of the agent's parts: persisted state, harness args, log tailing, process groups, Lepton dry-run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from nv_eval.agents import AgentState, ExecutorNotFound, endpoint_url_for, harness_run_args, load_executor
from nv_eval.agents.lepton import LeptonExecutor
from nv_eval.agents.local import LocalExecutor
from nv_eval.agents.local._procutil import LogTail, group_members, is_alive, kill_group, proc_start_time, spawn_detached
from nv_eval.protocol import (
    EndpointSpec,
    JobSpec,
    LeptonExecution,
    LlamaCppDeployment,
    LocalExecution,
    TaskEntry,
    TaskParams,
    VllmDeployment,
)


def _job(tmp: Path, **kw: object) -> JobSpec:
    base: dict[str, object] = dict(
        job_id="0123456789abcdef.0",
        invocation_id="0123456789abcdef",
        index=0,
        task=TaskEntry(name="arc_easy"),
        params=TaskParams(limit_samples=10, temperature=0.0),
        endpoint=EndpointSpec(url="http://h:8000/v1", model_id="m", type="chat", api_key_name="MY_KEY"),
        execution=LocalExecution(runtime="process"),
        invocation_dir=str(tmp / "0123456789abcdef"),
        task_dir=str(tmp / "0123456789abcdef" / "arc_easy"),
    )
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def test_state_persists_jobs_seq_handle_and_agent_id(tmp_path: Path) -> None:
    st = AgentState(tmp_path)
    aid = st.agent_id("local", "default")
    assert aid.startswith("local-default-") and "." not in aid
    e = st.add(_job(tmp_path), runtime="process")
    e.seq = 7
    e.handle = {"pid": 1, "stdout_offset": 42}
    st.save(e)
    st2 = AgentState(tmp_path)
    assert st2.agent_id("local", "default") == aid  # same identity after a restart
    (e2,) = st2.live()
    assert (e2.seq, e2.handle, e2.runtime) == (7, {"pid": 1, "stdout_offset": 42}, "process")
    e2.state = "succeeded"
    e2.finished_at = time.time() - 10 * 86400
    st2.save(e2)
    assert AgentState(tmp_path).live() == []
    assert AgentState(tmp_path).prune() == 1
    assert list((tmp_path / "jobs").glob("*")) == []


def test_state_ignores_a_corrupt_file(tmp_path: Path) -> None:
    st = AgentState(tmp_path)
    st.add(_job(tmp_path))
    (tmp_path / "jobs" / "garbage.json").write_text("{not json")
    assert [e.job.job_id for e in AgentState(tmp_path).all()] == ["0123456789abcdef.0"]


def test_harness_args_pass_key_by_name_and_params_as_json(tmp_path: Path) -> None:
    job = _job(tmp_path)
    args = harness_run_args(job, endpoint_url="http://h:8000/v1/chat/completions", output_dir="/o")
    assert args[:2] == ["run", "--task"] and args[2] == "arc_easy"
    assert args[args.index("--api-key-env") + 1] == "MY_KEY"
    assert json.loads(args[args.index("--params-json") + 1]) == {"limit_samples": 10, "temperature": 0.0}
    assert args[args.index("--endpoint-type") + 1] == "chat"


@pytest.mark.parametrize(
    ("base", "kind", "want"),
    [
        ("http://h:1/v1", "chat", "http://h:1/v1/chat/completions"),
        ("http://h:1", "completions", "http://h:1/v1/completions"),
        ("http://h:1/v1/", "completions", "http://h:1/v1/completions"),
        ("http://h:1/v1/completions", "completions", "http://h:1/v1/completions"),
    ],
)
def test_endpoint_url_for(base: str, kind: str, want: str) -> None:
    assert endpoint_url_for(base, kind) == want


def test_log_tail_returns_complete_lines_with_offsets(tmp_path: Path) -> None:
    f = tmp_path / "x.log"
    f.write_bytes(b"one\ntw")
    t = LogTail(f)
    assert t.read() == [("one", 4)] and t.offset == 4
    assert t.read() == []
    with f.open("ab") as w:
        w.write(b"o\r\nthree")
    assert t.read() == [("two", 9)]
    assert t.read(final=True) == [("three", 14)]
    # resuming from a saved offset neither repeats nor skips
    assert LogTail(f, 4).read(final=True) == [("two", 9), ("three", 14)]


async def test_spawned_job_survives_as_its_own_group_and_kill_group_is_prompt(tmp_path: Path) -> None:
    ids = spawn_detached(
        [sys.executable, "-c", "import time,sys; print('hi', flush=True); time.sleep(60)"],
        stdout=tmp_path / "o.log",
        stderr=tmp_path / "e.log",
        exit_code_file=tmp_path / "rc",
    )
    assert ids["pid"] == ids["pgid"] and is_alive(ids["pid"], ids["start_time"])
    assert not is_alive(ids["pid"], ids["start_time"] + 1)  # pid reuse guard
    with anyio.fail_after(5):
        while not (tmp_path / "o.log").read_text():
            await anyio.sleep(0.05)
    assert len(group_members(ids["pgid"])) == 2  # the wrapper and the command
    t0 = time.monotonic()
    assert await kill_group(ids["pgid"], grace=3.0, timeout=5.0)
    assert time.monotonic() - t0 < 5
    assert group_members(ids["pgid"]) == [] and proc_start_time(ids["pid"]) is None
    with anyio.fail_after(3):
        while not (tmp_path / "rc").exists():
            await anyio.sleep(0.05)
    assert (tmp_path / "rc").read_text().strip() == "143"  # the wrapper recorded how it ended
    assert (tmp_path / "o.log").read_text() == "hi\n"


async def test_kill_group_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('x', flush=True); time.sleep(60)"
    ids = spawn_detached([sys.executable, "-c", code], stdout=tmp_path / "o", stderr=tmp_path / "e", exit_code_file=tmp_path / "rc")
    with anyio.fail_after(5):
        while not (tmp_path / "o").read_text():
            await anyio.sleep(0.05)
    t0 = time.monotonic()
    assert await kill_group(ids["pgid"], grace=1.0, timeout=4.0)
    assert 0.9 < time.monotonic() - t0 < 4


def test_load_executor_by_entry_point() -> None:
    assert isinstance(load_executor("local"), LocalExecutor)
    assert isinstance(load_executor("lepton"), LeptonExecutor)
    with pytest.raises(ExecutorNotFound, match="unknown executor 'nope'.*local"):
        load_executor("nope")


def test_local_describe_shows_commands_and_starts_nothing(tmp_path: Path) -> None:
    jobs = [
        _job(tmp_path, deployment=LlamaCppDeployment(port=8123), deployment_group="g", group_jobs=["a", "b"],
             endpoint=EndpointSpec(url=None, model_id="m", type="completions")),
        _job(tmp_path, job_id="0123456789abcdef.1", index=1, deployment=VllmDeployment()),
    ]  # fmt: skip
    out = LocalExecutor().describe(jobs)
    assert "llama_cpp.server" in out and "--port 8123" in out and "tokenizer.ggml.add_bos_token=bool:true" in out
    assert "--endpoint-url http://127.0.0.1:8123/v1/completions" in out
    assert "deployment type vllm needs the docker runtime" in out
    assert not (tmp_path / "0123456789abcdef").exists()


def test_local_executor_picks_the_process_runtime(tmp_path: Path) -> None:
    ex = LocalExecutor()
    rt = ex.runtime_for(_job(tmp_path))
    assert rt.name == "process"


def test_lepton_describe_payloads_reference_secrets_by_name(tmp_path: Path) -> None:
    ex = LeptonExecution(node_group="h100-pool-x", env_names=["HF_TOKEN"], endpoint_resource_shape="gpu.1xh200")
    jobs = [
        _job(tmp_path, job_id=f"0123456789abcdef.{i}", index=i, execution=ex, task=TaskEntry(name=t),
             deployment=VllmDeployment(hf_model_handle="meta/llama"), deployment_group="g0",
             endpoint=EndpointSpec(url=None, model_id="llama", type="chat", api_key_name="EP_TOKEN"))
        for i, t in enumerate(["arc_easy", "gsm8k"])
    ]  # fmt: skip
    out = LeptonExecutor().describe(jobs)
    assert out.count("POST /deployments") == 1 and out.count("POST /jobs") == 2
    from nv_eval.agents.lepton import endpoint_payload, job_payload

    ep = endpoint_payload(jobs[0])
    assert ep is not None and ep["spec"]["resource_requirement"]["resource_shape"] == "gpu.1xh200"
    assert {"name": "HF_TOKEN", "value_from": {"secret_name_ref": "HF_TOKEN"}} in ep["spec"]["envs"]
    jp = job_payload(jobs[1])
    name = jp["metadata"]["name"]
    assert len(name) <= 36 and name[0].isalpha() and name == name.lower()
    assert {"name": "EP_TOKEN", "value_from": {"secret_name_ref": "EP_TOKEN"}} in jp["spec"]["envs"]
    cmd = jp["spec"]["container"]["command"]
    assert cmd[:3] == ["nv-eval-harness", "run", "--task"] and "--api-key-env" in cmd
    with pytest.raises(ValueError, match="Lepton runtime not implemented yet"):
        LeptonExecutor().runtime_for(jobs[0])
    assert msgspec.json.encode(ep)  # JSON-able
