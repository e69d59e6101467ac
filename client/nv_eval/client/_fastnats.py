"""A minimal synchronous NATS request/reply client over a plain socket, for fast CLI start-up.

Importing nats-py costs a few hundred milliseconds; a one-shot ``status`` needs only
CONNECT, SUB on an inbox, PUB with a reply subject and one answer. Servers that require
TLS raise :class:`NeedFullClient` so the caller can fall back to nats-py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from urllib.parse import unquote, urlsplit


class NatsUnreachable(OSError):
    """The server cannot be reached or refused the connection."""


class NoResponders(Exception):
    """Nobody subscribes to the request subject (HTTP-like status 503)."""


class NeedFullClient(Exception):
    """The server needs features this client lacks (TLS, nkeys); use nats-py."""


class RequestTimeout(TimeoutError):
    """No reply arrived in time."""


def _host_port(url: str) -> tuple[str, int, dict[str, str]]:
    first = url.split(",")[0].strip()
    if "://" not in first:
        first = "nats://" + first
    u = urlsplit(first)
    if u.scheme not in ("nats", ""):
        raise NeedFullClient(f"scheme {u.scheme}")
    auth: dict[str, str] = {}
    if u.username and u.password is not None:
        auth = {"user": unquote(u.username), "pass": unquote(u.password)}
    elif u.username:
        auth = {"auth_token": unquote(u.username)}
    return u.hostname or "127.0.0.1", u.port or 4222, auth


class _Conn:
    def __init__(self, url: str, timeout: float) -> None:
        host, port, auth = _host_port(url)
        self.deadline = time.monotonic() + timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=min(timeout, 2.0))
        except OSError as e:
            raise NatsUnreachable(f"cannot connect to nats://{host}:{port}: {e.strerror or e}") from None
        self.buf = b""
        line = self._line()
        if not line.startswith(b"INFO "):
            raise NatsUnreachable(f"nats://{host}:{port} is not a NATS server")
        info = json.loads(line[5:])
        if info.get("tls_required") or info.get("nonce") and not auth:
            self.close()
            raise NeedFullClient("tls or nkey auth")
        connect = {"verbose": False, "pedantic": False, "lang": "python-fast", "version": "0", "protocol": 1,
                   "headers": True, "no_responders": True, **auth}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise NatsUnreachable(f"server refused connection: {line[5:].decode(errors='replace').strip()}")

    def _recv(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout("timed out")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise RequestTimeout("timed out") from None
        except OSError as e:
            raise NatsUnreachable(f"connection lost: {e}") from None
        if not chunk:
            raise NatsUnreachable("connection closed by the server")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._recv()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def request(self, subject: str, payload: bytes) -> bytes:
        inbox = "_INBOX." + os.urandom(8).hex()
        self.sock.sendall(
            f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n"
        )
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise NatsUnreachable(f"server error: {line[5:].decode(errors='replace').strip()}")
            elif line.startswith(b"MSG "):
                return self._exact(int(line.split()[-1]))
            elif line.startswith(b"HMSG "):
                parts = line.split()
                hlen, total = int(parts[-2]), int(parts[-1])
                data = self._exact(total)
                head = data[:hlen].split(b"\r\n", 1)[0].split()
                if len(head) >= 2 and head[1] == b"503":
                    raise NoResponders(subject)
                return data[hlen:]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def request(url: str, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send one request and return the reply payload (raises the errors above)."""
    conn = _Conn(url, timeout)
    try:
        return conn.request(subject, payload)
    finally:
        conn.close()


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a NATS server answers at ``url``."""
    try:
        _Conn(url, timeout).close()
        return True
    except NeedFullClient:
        return True
    except (OSError, TimeoutError, ValueError):
        return False
