"""``python -m nv_eval.daemon``: bad arguments and an unreachable bus end with one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._support.services import free_port


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nv_eval.daemon", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nats-url", "nats://127.0.0.1:4222"], "--data-dir"),
        (["--data-dir", "x", "--nats-url", "nats://h:1", "--heartbeat-timeout", "0"], "--heartbeat-timeout"),
        (["--data-dir", "x", "--nats-url", "nats://h:1", "--heartbeat-timeout", "soon"], "--heartbeat-timeout"),
        (["--data-dir", "x", "--nats-url", "nats://h:1", "--http-port", "70000"], "--http-port"),
        (["--data-dir", "x", "--nats-url", "nats://h:1", "--connect-timeout", "-1"], "--connect-timeout"),
    ],
)
def test_bad_arguments(args: list[str], needle: str) -> None:
    r = _run(*args)
    assert r.returncode == 2
    assert needle in r.stderr.strip().splitlines()[-1]


def test_unreachable_nats_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    r = _run("--nats-url", f"nats://127.0.0.1:{port}", "--data-dir", str(tmp_path), "--connect-timeout", "1")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"nv-eval daemon: cannot reach NATS at nats://127.0.0.1:{port} within 1s"
    assert "Traceback" not in r.stderr
