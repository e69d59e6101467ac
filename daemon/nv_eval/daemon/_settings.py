"""Daemon settings: the options of ``python -m nv_eval.daemon`` as one typed value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nv_eval.protocol import DEFAULT_PREFIX


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything :func:`nv_eval.daemon.serve` needs to run."""

    nats_url: str
    data_dir: Path
    prefix: str = DEFAULT_PREFIX
    heartbeat_timeout: float = 30.0  # seconds an agent may stay silent before its jobs are lost
    http_port: int = 0  # 0: no HTTP API
    http_host: str = "127.0.0.1"
    check_interval: float | None = None  # lost-agent scan period; default min(1, timeout/4)
    connect_timeout: float = 10.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / f"daemon-{self.prefix}.sqlite3"

    @property
    def scan_interval(self) -> float:
        if self.check_interval is not None:
            return self.check_interval
        return max(0.05, min(1.0, self.heartbeat_timeout / 4))
