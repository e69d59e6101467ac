"""How the Slurm agent reaches the cluster: locally (subprocesses on the login node) or
remotely (asyncssh: one multiplexed connection with keepalives, reconnect with backoff,
SFTP for files, host key verified against known_hosts unless explicitly skipped).

Both modes share one interface, :class:`Conn`: ``run(argv)`` (argv joined with
``shlex.join`` for the remote shell, never interpolated), ``read``/``write``/``mkdir``.
Secrets are passed to a command as NAMES plus values on stdin (NUL-separated), so no
value appears in a command line, a script or a log.
"""

from __future__ import annotations

import abc
import asyncio
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

log = structlog.get_logger("nv_eval.agents.slurm.conn")


class ConnError(Exception):
    """The cluster could not be reached (SSH down, timeout): never a job failure by itself."""


@dataclass
class CmdResult:
    rc: int
    stdout: str
    stderr: str


def with_secrets(argv: Sequence[str], secrets: Mapping[str, str]) -> tuple[list[str], bytes]:
    """Wrap ``argv`` so the named variables are read from stdin (values never on a command line)."""
    if not secrets:
        return list(argv), b""
    reads = "; ".join(f"IFS= read -r -d '' {n} || true; export {n}" for n in secrets)
    script = f"{reads}; exec {shlex.join(argv)}"
    data = b"".join(v.encode() + b"\0" for v in secrets.values())
    return ["bash", "-c", script], data


class Conn(abc.ABC):
    """A way to run Slurm commands and touch files on the login node."""

    remote: bool = False
    calls: dict[str, int]

    def __init__(self) -> None:
        self.calls = {}

    def _count(self, argv: Sequence[str]) -> None:
        key = argv[0] if argv[0] != "bash" else "bash"
        self.calls[key] = self.calls.get(key, 0) + 1

    @abc.abstractmethod
    async def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 30.0) -> CmdResult: ...

    @abc.abstractmethod
    async def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes | None:
        """Bytes of ``path`` from ``offset`` (None when the file does not exist)."""

    @abc.abstractmethod
    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    @abc.abstractmethod
    async def mkdir(self, path: str) -> None: ...

    @abc.abstractmethod
    async def remove(self, path: str) -> bool:
        """Remove a file; False when it did not exist."""

    async def aclose(self) -> None:  # noqa: B027
        pass


class LocalConn(Conn):
    """On the login node: subprocesses and plain files."""

    async def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 30.0) -> CmdResult:
        self._count(argv)
        try:
            with anyio.fail_after(timeout):
                p = await anyio.run_process(list(argv), input=stdin, check=False)
        except TimeoutError:
            raise ConnError(f"{argv[0]} did not answer within {timeout:.0f}s") from None
        except OSError as e:
            raise ConnError(f"cannot run {argv[0]}: {e}") from None
        return CmdResult(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))

    async def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes | None:
        def _read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(limit)
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(_read)

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        def _write() -> None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, mode)
            os.replace(tmp, p)

        await anyio.to_thread.run_sync(_write)

    async def mkdir(self, path: str) -> None:
        await anyio.to_thread.run_sync(lambda: Path(path).mkdir(parents=True, exist_ok=True))

    async def remove(self, path: str) -> bool:
        def _rm() -> bool:
            try:
                os.unlink(path)
                return True
            except FileNotFoundError:
                return False

        return await anyio.to_thread.run_sync(_rm)


@dataclass
class SshTarget:
    host: str
    port: int = 22
    username: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    insecure_skip_host_key_check: bool = False
    keepalive_interval: float = 10.0
    connect_timeout: float = 15.0


class SshConn(Conn):
    """One multiplexed asyncssh connection (+ one SFTP session), reconnected on failure."""

    remote = True

    def __init__(self, target: SshTarget, *, retry_for: float = 60.0, max_channels: int = 8) -> None:
        super().__init__()
        # sshd's MaxSessions is often 10: never open more exec channels at once than that
        self._channels = anyio.Semaphore(max_channels)
        self.target = target
        self._identity = os.path.expanduser(target.identity_file) if target.identity_file else None
        self._known_hosts = os.path.expanduser(target.known_hosts) if target.known_hosts else None
        self.retry_for = retry_for  # how long one operation keeps reconnecting before ConnError
        self._conn: object | None = None
        self._sftp: object | None = None
        self._lock = asyncio.Lock()
        self.connects = 0

    async def _connect(self) -> None:
        import asyncssh

        t = self.target
        kw: dict[str, object] = {
            "port": t.port,
            "keepalive_interval": t.keepalive_interval,
            "keepalive_count_max": 3,
            "connect_timeout": t.connect_timeout,
        }
        if t.username:
            kw["username"] = t.username
        if t.identity_file:
            kw["client_keys"] = [self._identity]
        if t.insecure_skip_host_key_check:
            kw["known_hosts"] = None
        elif t.known_hosts:
            kw["known_hosts"] = self._known_hosts
        conn = await asyncssh.connect(t.host, **kw)  # type: ignore[arg-type]
        try:
            sftp = await conn.start_sftp_client()
        except BaseException:
            conn.close()
            raise
        self._conn, self._sftp = conn, sftp
        self.connects += 1
        if self.connects > 1:
            log.info("ssh reconnected", host=t.host, port=t.port, connects=self.connects)

    def _drop(self) -> None:
        conn = self._conn
        self._conn = self._sftp = None
        if conn is not None:
            try:
                conn.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001
                pass

    async def _ensure(self) -> tuple[object, object]:
        import asyncssh

        async with self._lock:
            if self._conn is not None:
                return self._conn, self._sftp  # type: ignore[return-value]
            delay = 0.2
            deadline = anyio.current_time() + self.retry_for
            while True:
                try:
                    await self._connect()
                    return self._conn, self._sftp  # type: ignore[return-value]
                except asyncssh.HostKeyNotVerifiable as e:
                    raise ConnError(f"host key of {self.target.host} not verifiable: {e} (check known_hosts)") from None
                except asyncssh.PermissionDenied as e:
                    raise ConnError(f"ssh login to {self.target.host} refused: {e}") from None
                except (OSError, asyncssh.Error, TimeoutError) as e:
                    if anyio.current_time() + delay > deadline:
                        raise ConnError(f"cannot reach {self.target.host}:{self.target.port} over ssh: {e}") from None
                    log.warning("ssh connect failed, retrying", error=str(e), retry_in=delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _retrying(self, what: str, op, timeout: float):  # type: ignore[no-untyped-def]
        """Run ``op(conn, sftp)``; on a broken connection reconnect and retry, bounded."""
        import asyncssh

        deadline = anyio.current_time() + max(timeout, self.retry_for)
        while True:
            conn, sftp = await self._ensure()
            try:
                with anyio.fail_after(timeout):
                    return await op(conn, sftp)
            except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, asyncssh.DisconnectError, BrokenPipeError,
                    ConnectionError, TimeoutError, asyncssh.SFTPConnectionLost) as e:  # fmt: skip
                if self._conn is conn:
                    self._drop()
                if anyio.current_time() > deadline:
                    raise ConnError(f"{what}: ssh connection lost: {e!r}") from None
                log.warning("ssh operation failed, reconnecting", what=what, error=repr(e))
                await anyio.sleep(0.2)

    async def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 30.0) -> CmdResult:
        self._count(argv)
        cmd = shlex.join(argv)

        async def op(conn, sftp):  # type: ignore[no-untyped-def]
            async with self._channels:
                r = await conn.run(cmd, input=stdin or None, check=False, encoding=None)
            out = r.stdout or b""
            err = r.stderr or b""
            rc = r.exit_status if r.exit_status is not None else 255
            return CmdResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

        return await self._retrying(argv[0], op, timeout)  # type: ignore[no-any-return]

    async def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes | None:
        import asyncssh

        async def op(conn, sftp):  # type: ignore[no-untyped-def]
            try:
                async with sftp.open(path, "rb") as f:
                    await f.seek(offset)
                    return await f.read(limit)
            except asyncssh.SFTPNoSuchFile:
                return None

        return await self._retrying("sftp read", op, 30.0)  # type: ignore[no-any-return]

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        async def op(conn, sftp):  # type: ignore[no-untyped-def]
            parent = path.rsplit("/", 1)[0]
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
            tmp = f"{path}.tmp"
            async with sftp.open(tmp, "wb") as f:
                await f.write(data)
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)

        await self._retrying("sftp write", op, 30.0)

    async def mkdir(self, path: str) -> None:
        async def op(conn, sftp):  # type: ignore[no-untyped-def]
            await sftp.makedirs(path, exist_ok=True)

        await self._retrying("sftp mkdir", op, 30.0)

    async def remove(self, path: str) -> bool:
        import asyncssh

        async def op(conn, sftp):  # type: ignore[no-untyped-def]
            try:
                await sftp.remove(path)
                return True
            except asyncssh.SFTPNoSuchFile:
                return False

        return await self._retrying("sftp remove", op, 30.0)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        self._drop()
