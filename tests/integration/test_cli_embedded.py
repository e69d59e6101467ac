"""The embedded default: with no bus configured, the first command that needs the daemon starts
nats-server + daemon + local agent detached under NV_EVAL_HOME; later commands (and
concurrent first commands) reuse one stack; ``daemon stop`` stops all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
    env.update(NV_EVAL_HOME=str(home), XDG_CONFIG_HOME=str(home.parent / "xdg"))
    return env


def nv(argv: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nv_eval.client.cli", *argv], env=_env(home), cwd=cwd or home.parent,
                          capture_output=True, text=True, timeout=120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "home"
    yield h
    nv(["daemon", "stop"], h)
    state = h / "embedded.json"
    if state.exists():  # last resort: never leave processes behind
        for pid in json.loads(state.read_text())["pids"].values():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_start_reuse_stop(home: Path, tmp_path: Path) -> None:
    # two concurrent first commands start exactly one stack
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: nv(["status", "0123456789abcdef"], home), range(2)))
    for r in results:
        assert r.returncode == 4, r.stderr  # the daemon answered: not found
        assert len(r.stderr.strip().splitlines()) == 1
    state = json.loads((home / "embedded.json").read_text())
    pids = state["pids"]
    assert set(pids) == {"nats", "daemon", "agent"} and all(_alive(p) for p in pids.values())
    assert state["url"].startswith("nats://127.0.0.1:")
    assert (home / "jetstream").is_dir() and (home / "logs" / "daemon.log").exists()

    # later commands reuse it
    st = nv(["daemon", "status", "--json"], home)
    assert st.returncode == 0, st.stderr
    info = json.loads(st.stdout)
    assert info["answering"] and info["url"] == state["url"] and info["pids"] == pids
    again = nv(["ls", "runs", "--json"], home)
    assert again.returncode == 0, again.stderr
    assert json.loads((home / "embedded.json").read_text())["pids"] == pids

    # a dead component is noticed and the stack restarted (state kept in NV_EVAL_HOME)
    os.kill(pids["daemon"], 9)
    deadline = time.monotonic() + 5
    while _alive(pids["daemon"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = nv(["status", "0123456789abcdef"], home)
    assert r.returncode == 4, r.stderr
    new = json.loads((home / "embedded.json").read_text())["pids"]
    assert new["daemon"] != pids["daemon"] and not _alive(pids["nats"])

    stop = nv(["daemon", "stop"], home)
    assert stop.returncode == 0 and "nats" in stop.stdout
    assert not (home / "embedded.json").exists()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in new.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in new.values())
    down = nv(["daemon", "status"], home)
    assert down.returncode == 3


def test_configured_url_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "xdg" / "nv-eval").mkdir(parents=True)
    (tmp_path / "xdg" / "nv-eval" / "config.toml").write_text('nats_url = "nats://127.0.0.1:1"\nprefix = "p"\n')
    r = nv(["status", "0123456789abcdef"], home)
    assert r.returncode == 3 and "nats://127.0.0.1:1" in r.stderr
    assert not home.exists()
    s = nv(["daemon", "stop"], home)
    assert s.returncode == 2 and "not managed by this client" in s.stderr
