"""The daemon's API on a real nats-server: run/dispatch, status lookups, typed errors, list verbs."""

from __future__ import annotations

from pathlib import Path

import pytest
from nv_eval.protocol import (
    ApiError,
    ListRunsReply,
    ListRunsRequest,
    ListTasksReply,
    ListTasksRequest,
    RunReply,
    StatusEvent,
    StatusReply,
    StatusRequest,
    load_registry,
)

from tests.integration.test_daemon_helpers import FakeAgentIO, call, connect, daemon, event_history, run_request

pytestmark = pytest.mark.timeout(60)


async def test_run_dispatches_jobs_and_emits_events(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy", "hellaswag"]), RunReply)
        assert isinstance(rep, RunReply), rep
        inv = rep.invocation
        assert [j.job_id for j in inv.jobs] == [f"{inv.invocation_id}.0", f"{inv.invocation_id}.1"]
        assert (tmp_path / "out" / inv.invocation_id / "config.yaml").read_text().startswith("execution:")

        agent = FakeAgentIO(nc, prefix)
        specs = await agent.take_jobs(2)
        assert sorted(s.job_id for s in specs) == [j.job_id for j in inv.jobs]
        assert all(s.attempt == 1 and s.endpoint.model_id == "m" for s in specs)

        hist = await event_history(nc, prefix, inv.invocation_id)
        per_job: dict[str, list[str]] = {}
        for ev, hdr in hist:
            assert isinstance(ev, StatusEvent) and ev.source == "daemon"
            assert hdr == ev.msg_id == f"{ev.job_id}:d1-{ev.state}"
            per_job.setdefault(ev.job_id, []).append(ev.state)
        assert per_job == {j.job_id: ["pending", "dispatched"] for j in inv.jobs}

        st = await call(nc, prefix, "status", StatusRequest(id=inv.invocation_id[:6]), StatusReply)
        assert isinstance(st, StatusReply)
        assert st.job_id is None
        assert [j.state for j in st.invocation.jobs] == ["dispatched", "dispatched"]
        assert all(j.last_seq == 2 for j in st.invocation.jobs)


async def test_status_lookup_errors_and_malformed_requests(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        ids: list[str] = []
        # plant two invocations sharing a one-char prefix by choosing their ids
        for inv_id in ("abc0000000000001", "abc0000000000002"):
            req = run_request(tmp_path / "out", ["arc_easy"] * 11)
            req.invocation_id = inv_id
            rep = await call(nc, prefix, "run", req, RunReply)
            assert isinstance(rep, RunReply), rep
            ids.append(rep.invocation.invocation_id)

        amb = await call(nc, prefix, "status", StatusRequest(id="abc"), StatusReply)
        assert isinstance(amb, ApiError) and amb.code == "ambiguous"
        assert ids[0] in amb.message and ids[1] in amb.message and "\n" not in amb.message

        by_job = await call(nc, prefix, "status", StatusRequest(id=f"{ids[1]}.3"), StatusReply)
        assert isinstance(by_job, StatusReply) and by_job.job_id == f"{ids[1]}.3"
        assert by_job.invocation.invocation_id == ids[1]
        # "<inv>.1" is a job id itself, and also a prefix of .10; the exact match wins
        exact = await call(nc, prefix, "status", StatusRequest(id=f"{ids[0]}.1"), StatusReply)
        assert isinstance(exact, StatusReply) and exact.job_id == f"{ids[0]}.1"
        job_amb = await call(nc, prefix, "status", StatusRequest(id=f"{ids[0]}."), StatusReply)
        assert isinstance(job_amb, ApiError) and job_amb.code == "ambiguous"

        for missing in ("ffff", f"{ids[0]}.99", "0123456789abcdef"):
            nf = await call(nc, prefix, "status", StatusRequest(id=missing), StatusReply)
            assert isinstance(nf, ApiError) and nf.code == "not_found", (missing, nf)

        bad = await call(nc, prefix, "status", StatusRequest(id="not-an-id!"), StatusReply)
        assert isinstance(bad, ApiError) and bad.code == "bad_request"

        for raw in (b"{not json", b'{"id": 5}', b"[]", b'{"config": {"execution": {"type": "nope"}}, "tasks": []}'):
            for verb in ("status", "run", "kill"):
                err = await call(nc, prefix, verb, raw, StatusReply)
                assert isinstance(err, ApiError) and err.code == "bad_request", (verb, raw, err)
                assert "\n" not in err.message

        unplannable = run_request(tmp_path / "out", [])
        err = await call(nc, prefix, "run", unplannable, RunReply)
        assert isinstance(err, ApiError) and err.code == "bad_request" and "evaluation.tasks" in err.message

        # malformed heartbeats and events for unknown jobs are logged and dropped
        await nc.publish(f"{prefix}.agents.x.heartbeat", b"{nope")
        await nc.jetstream().publish(f"{prefix}.events.ffffffffffffffff.0.status", b'{"kind": "status"}')
        await nc.flush()

        # still answering after all that
        ok = await call(nc, prefix, "status", StatusRequest(id=ids[0]), StatusReply)
        assert isinstance(ok, StatusReply) and len(ok.invocation.jobs) == 11


async def test_list_runs_and_tasks(nats_url: str, prefix: str, tmp_path: Path) -> None:
    async with daemon(nats_url, prefix, tmp_path / "data"), connect(nats_url) as nc:
        made = []
        for _ in range(3):
            rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["gsm8k"]), RunReply)
            made.append(rep.invocation.invocation_id)
        runs = await call(nc, prefix, "list_runs", ListRunsRequest(limit=2), ListRunsReply)
        assert isinstance(runs, ListRunsReply)
        assert [i.invocation_id for i in runs.invocations] == made[::-1][:2]
        later = await call(nc, prefix, "list_runs", ListRunsRequest(since=runs.invocations[0].created_at + 1), ListRunsReply)
        assert isinstance(later, ListRunsReply) and later.invocations == []
        tasks = await call(nc, prefix, "list_tasks", ListTasksRequest(), ListTasksReply)
        assert isinstance(tasks, ListTasksReply)
        assert {t.name for t in tasks.tasks} == set(load_registry())


async def test_http_api(nats_url: str, prefix: str, tmp_path: Path) -> None:
    import aiohttp

    from tests._support.services import free_port

    port = free_port()
    async with daemon(nats_url, prefix, tmp_path / "data", http_port=port), connect(nats_url) as nc:
        rep = await call(nc, prefix, "run", run_request(tmp_path / "out", ["arc_easy"]), RunReply)
        inv = rep.invocation.invocation_id
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            async with http.get(f"{base}/api/status/{inv[:5]}") as r:
                assert r.status == 200
                body = await r.json()
                assert body["reply"] == "status" and body["invocation"]["invocation_id"] == inv
            async with http.get(f"{base}/api/status/ffffffff") as r:
                assert r.status == 404 and (await r.json())["code"] == "not_found"
            async with http.get(f"{base}/api/runs?limit=x") as r:
                assert r.status == 400
            async with http.get(f"{base}/api/runs") as r:
                assert [i["invocation_id"] for i in (await r.json())["invocations"]] == [inv]


async def test_second_daemon_on_the_same_prefix_refuses(nats_url: str, prefix: str, tmp_path: Path) -> None:
    import sys

    import anyio

    cmd = [sys.executable, "-m", "nv_eval.daemon", "--nats-url", nats_url, "--prefix", prefix]
    async with daemon(nats_url, prefix, tmp_path / "data"):
        with anyio.fail_after(30):
            r = await anyio.run_process([*cmd, "--data-dir", str(tmp_path / "d2")], check=False)
        assert r.returncode == 1
        last = r.stderr.decode().strip().splitlines()[-1]
        assert last == f"nv-eval daemon: another daemon already serves prefix {prefix!r} on this bus"
