"""Detached processes that outlive the agent: spawn, identify (pid + start time), stop, tail.

A job runs under a tiny ``sh`` wrapper (its own session and process group) that redirects
stdout/stderr to files and writes the exit code to a file, so an agent restarted later can
learn how the job ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

# "$1" = stdout file, "$2" = stderr file, "$3" = exit code file, rest = the command
_WRAPPER = r"""
out="$1"; err="$2"; rcf="$3"; shift 3
"$@" >>"$out" 2>>"$err" </dev/null &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
wait "$pid"; rc=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
printf '%s\n' "$rc" >"$rcf.tmp" && mv -f "$rcf.tmp" "$rcf"
"""

# children we spawned ourselves, so they can be reaped (no zombies while the agent lives)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def _reap(pid: int) -> None:
    p = _CHILDREN.get(pid)
    if p is not None and p.poll() is not None:
        _CHILDREN.pop(pid, None)


def is_alive(pid: int, start_time: int | None) -> bool:
    """True while the process ``pid`` that started at ``start_time`` exists (guards pid reuse)."""
    _reap(pid)
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids of process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        if rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            out.append(int(d))
    return out


def spawn_detached(
    cmd: Sequence[str],
    *,
    stdout: Path,
    stderr: Path,
    exit_code_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, int]:
    """Start ``cmd`` in its own session under the exit-code wrapper; returns {pid, pgid, start_time}."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    stderr.parent.mkdir(parents=True, exist_ok=True)
    for f in (stdout, stderr):
        f.touch()
    try:
        exit_code_file.unlink()
    except FileNotFoundError:
        pass
    p = subprocess.Popen(
        ["/bin/sh", "-c", _WRAPPER, "nv-eval-job", str(stdout), str(stderr), str(exit_code_file), *cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    _CHILDREN[p.pid] = p
    st = proc_start_time(p.pid) or 0
    return {"pid": p.pid, "pgid": p.pid, "start_time": st}


def read_exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def kill_group(pgid: int, *, grace: float = 3.0, timeout: float = 5.0) -> bool:
    """SIGTERM the group, SIGKILL after ``grace`` s; True when nothing of it is left within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    killed = False
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if not killed and time.monotonic() > deadline - (timeout - grace):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return True
            killed = True
        await anyio.sleep(0.05)
    _reap(pgid)
    return not group_members(pgid)


class LogTail:
    """Reads complete new lines of a file from a byte offset (the offset goes into the handle)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def read(self, final: bool = False, max_bytes: int = 1 << 20) -> list[tuple[str, int]]:
        """New complete lines (all remaining bytes when ``final``) as ``(line, offset after it)``."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(max_bytes)
        except OSError:
            return []
        if not data:
            return []
        if not final:
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) < max_bytes:
                    return []
                cut = len(data) - 1  # one huge line: emit it in pieces
            data = data[: cut + 1]
        out: list[tuple[str, int]] = []
        pos = self.offset
        for raw in data.split(b"\n"):
            if pos - self.offset >= len(data):
                break
            pos += len(raw) + 1
            out.append((raw.rstrip(b"\r").decode("utf-8", "replace"), min(pos, self.offset + len(data))))
        self.offset += len(data)
        return out
