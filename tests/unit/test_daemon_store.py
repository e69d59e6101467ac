"""The daemon's SQLite fold: de-duplication, ordering rules, id resolution, restart persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
from nv_eval.daemon import daemon_msg_id, invocation_state
from nv_eval.daemon._store import Ambiguous, BadId, NotFound, Store
from nv_eval.protocol import (
    ApiEndpoint,
    EvaluationConfig,
    JobRecord,
    LocalExecution,
    LogEvent,
    ProgressEvent,
    RunConfig,
    StatusEvent,
    TargetConfig,
    TaskConfig,
    event_msg_id,
    load_registry,
    plan_invocation,
)

INV = "0123456789abcdef"


def _store(tmp_path: Path, n: int = 2, inv: str = INV) -> Store:
    reg = load_registry()
    cfg = RunConfig(
        execution=LocalExecution(output_dir=str(tmp_path / "out")),
        target=TargetConfig(api_endpoint=ApiEndpoint(url="http://h/v1/completions", model_id="m")),
        evaluation=EvaluationConfig(tasks=[TaskConfig(name="arc_easy")] * n),
    )
    st = Store(tmp_path / "db.sqlite3")
    st.add_invocation(plan_invocation(inv, cfg, [reg["arc_easy"]] * n), "m", str(tmp_path / "out"), 1.0)
    return st


def _status(job: str, seq: int, state: str, source: str = "a1", attempt: int = 1, msg_id: str = "") -> StatusEvent:
    return StatusEvent(
        invocation_id=INV,
        job_id=job,
        seq=seq,
        ts=float(seq),
        source=source,
        msg_id=msg_id or event_msg_id(job, seq),
        state=state,  # type: ignore[arg-type]
        attempt=attempt,
    )


def test_duplicates_and_stream_redelivery_are_skipped(tmp_path: Path) -> None:
    st = _store(tmp_path)
    j = f"{INV}.0"
    assert st.apply(_status(j, 1, "running"), stream_seq=5).applied
    assert st.apply(_status(j, 1, "running"), stream_seq=6).reason == "duplicate message id"
    assert st.apply(_status(j, 2, "succeeded"), stream_seq=6).reason == "already applied (stream sequence)"
    assert st.job(j).state == "running"  # type: ignore[union-attr]
    assert st.apply(_status(j, 2, "succeeded"), stream_seq=7).applied
    assert st.last_stream_seq() == 7


def test_terminal_state_wins_and_old_attempts_are_ignored(tmp_path: Path) -> None:
    st = _store(tmp_path)
    j = f"{INV}.0"
    st.apply(_status(j, 1, "running"))
    st.apply(_status(j, 2, "killed"))
    assert not st.apply(_status(j, 3, "running")).applied
    prog = ProgressEvent(invocation_id=INV, job_id=j, seq=4, ts=4.0, source="a1", done=1, total=2)
    assert not st.apply(prog).applied
    rec = st.job(j)
    assert rec is not None and rec.state == "killed" and rec.last_seq == 4 and rec.progress is None
    # resume: the daemon's dispatched of attempt 2 reopens the job; attempt 1 stays ignored
    d = _status(j, 5, "dispatched", source="daemon", attempt=2, msg_id=daemon_msg_id(j, 2, "dispatched"))
    assert st.apply(d).applied
    assert not st.apply(_status(j, 6, "failed", attempt=1)).applied
    assert st.apply(_status(j, 1_000_001, "running", source="a2", attempt=2)).applied
    rec = st.job(j)
    assert rec is not None and (rec.state, rec.attempt, rec.agent_id) == ("running", 2, "a2")


def test_lost_is_sticky_for_agent_events_of_that_attempt(tmp_path: Path) -> None:
    st = _store(tmp_path)
    j = f"{INV}.1"
    st.apply(_status(j, 1, "running"))
    st.apply(_status(j, 2, "lost", source="daemon", msg_id=daemon_msg_id(j, 1, "lost")))
    assert "declared lost" in st.apply(_status(j, 3, "succeeded")).reason
    assert st.apply(_status(j, 4, "failed", source="daemon", msg_id=daemon_msg_id(j, 1, "failed"))).applied
    assert st.job(j).state == "failed"  # type: ignore[union-attr]


def test_log_events_advance_seq_only_and_state_survives_reopen(tmp_path: Path) -> None:
    st = _store(tmp_path)
    j = f"{INV}.0"
    log = LogEvent(invocation_id=INV, job_id=j, seq=9, ts=1.0, source="a1", lines=["x"])
    st.apply(log, stream_seq=3)
    st.apply(log, stream_seq=4)  # log events are not de-duplicated by id (not stored) but count once per stream seq
    st.close()
    st2 = Store(tmp_path / "db.sqlite3")
    rec = st2.job(j)
    assert rec is not None and rec.last_seq == 9 and rec.state == "pending"
    assert st2.last_stream_seq() == 4


def test_resolve(tmp_path: Path) -> None:
    st = _store(tmp_path, n=12)
    other = "0123456789abcdee"
    reg = load_registry()
    cfg = RunConfig(
        target=TargetConfig(api_endpoint=ApiEndpoint(url="http://h/v1/completions", model_id="m")),
        evaluation=EvaluationConfig(tasks=[TaskConfig(name="gsm8k")]),
    )
    st.add_invocation(plan_invocation(other, cfg, [reg["gsm8k"]]), "m", "out", 2.0)
    assert st.resolve(INV) == (INV, None)
    assert st.resolve("0123456789abcdef".upper()) == (INV, None)
    assert st.resolve(f"{INV}.1") == (INV, f"{INV}.1")
    assert st.resolve(f"{INV}.11") == (INV, f"{INV}.11")
    assert st.resolve(f"{other}.") == (other, f"{other}.0")
    with pytest.raises(Ambiguous, match=r"0123456789abcdee.*0123456789abcdef|0123456789abcdef.*0123456789abcdee"):
        st.resolve("0123")
    with pytest.raises(Ambiguous):
        st.resolve(f"{INV}.")
    with pytest.raises(NotFound):
        st.resolve("ffff")
    with pytest.raises(NotFound):
        st.resolve(f"{INV}.99")
    with pytest.raises(BadId):
        st.resolve("zz")
    with pytest.raises(BadId):
        st.resolve("")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "pending"),
        (["pending", "dispatched"], "pending"),
        (["dispatched", "running"], "running"),
        (["succeeded", "lost"], "running"),
        (["succeeded", "succeeded"], "succeeded"),
        (["succeeded", "failed"], "failed"),
        (["failed", "killed"], "killed"),
    ],
)
def test_invocation_state(states: list[str], expected: str) -> None:
    jobs = [
        JobRecord(job_id=f"{INV}.{i}", invocation_id=INV, index=i, task="t", executor="local", state=s, task_dir="d")  # type: ignore[arg-type]
        for i, s in enumerate(states)
    ]
    assert invocation_state(jobs) == expected
