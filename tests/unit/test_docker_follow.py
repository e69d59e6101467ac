"""Log following helpers: Docker timestamps to ns, re-attach de-duplication, progress lines."""

from __future__ import annotations

from nv_eval.agents._harness import progress_of
from nv_eval.agents.local._docker_follow import _split, ts_to_ns


def test_timestamps_with_trimmed_fractions_order_correctly() -> None:
    a = ts_to_ns("2026-11-28T12:00:00.1Z")
    b = ts_to_ns("2026-11-28T12:00:00.10001Z")
    c = ts_to_ns("2026-11-28T12:00:00.123456789Z")
    assert a is not None and b is not None and c is not None
    assert a < b < c  # as strings, "00.1Z" > "00.10001Z" ('Z' sorts after '0'): compare numbers
    assert c % 1_000_000_000 == 123_456_789
    assert ts_to_ns("2026-11-28T13:00:00+01:00") == ts_to_ns("2026-11-28T12:00:00Z")
    assert ts_to_ns("garbage") is None


def test_reattach_drops_lines_not_newer_than_the_saved_one() -> None:
    saved = ts_to_ns("2026-11-28T12:00:01.5Z")
    assert saved is not None
    assert _split("2026-11-28T12:00:01.5Z already sent", saved) is None
    assert _split("2026-11-28T12:00:01.4Z older", saved) is None
    item = _split("2026-11-28T12:00:01.500000001Z new line\r", saved)
    assert item is not None and item[1] == "new line" and item[0] == saved + 1


def test_progress_lines() -> None:
    assert progress_of('{"event":"progress","done":3,"total":12,"rps":0.5,"eta_s":9}') == {
        "event": "progress", "done": 3, "total": 12, "rps": 0.5, "eta_s": 9,
    }  # fmt: skip
    assert progress_of('{"event":"done","results":"/work/output/results.json"}') is not None
    assert progress_of('{"other": 1}') is None
    assert progress_of("plain text") is None
