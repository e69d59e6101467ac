"""Slurm state mapping and squeue/sacct parsing (exact, no infrastructure state as pending)."""

from __future__ import annotations

import pytest
from nv_eval.agents.slurm import STATE_CATEGORY, category
from nv_eval.agents.slurm._poller import parse_sacct, parse_squeue


@pytest.mark.parametrize(
    ("state", "cat"),
    [
        ("PENDING", "queued"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("COMPLETED", "succeeded"),
        ("FAILED", "failed"),
        ("CANCELLED", "cancelled"),
        ("CANCELLED by 0", "cancelled"),
        ("TIMEOUT", "resubmit"),
        ("PREEMPTED", "resubmit"),
        ("NODE_FAIL", "resubmit"),
        ("BOOT_FAIL", "resubmit"),
        ("OUT_OF_MEMORY", "oom"),
        ("REQUEUED", "queued"),
    ],
)
def test_exact_mapping(state: str, cat: str) -> None:
    assert category(state) == cat


def test_no_infrastructure_state_is_queued() -> None:
    for s in ("TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "FAILED", "CANCELLED"):
        assert STATE_CATEGORY[s] != "queued"
    assert category("SOMETHING_NEW") is None


def test_parse_squeue_and_sacct() -> None:
    q = parse_squeue("12|RUNNING|None\n13|PENDING|Resources\n\n")
    assert q["12"].state == "RUNNING" and q["13"].reason == "Resources"
    a = parse_sacct("12|COMPLETED|0:0\n12.batch|COMPLETED|0:0\n13|CANCELLED by 0|0:15\n14|FAILED|2:0\n", "sacct -c")
    assert a["12"].state == "COMPLETED" and a["12"].exit_code == 0
    assert a["13"].state == "CANCELLED" and category(a["13"].state) == "cancelled"
    assert a["14"].exit_code == 2 and a["14"].source == "sacct -c"
    assert "12.batch" not in a
