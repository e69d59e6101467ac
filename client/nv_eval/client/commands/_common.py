"""Helpers shared by the commands: id checks, ``--since`` parsing, plain tables, JSON output."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from .._errors import UsageError

# same rule as nv_eval.protocol.is_id_prefix, inlined: importing the protocol package costs
# ~25 ms of the `status` start-up budget (a unit test keeps the two in step)
_ID_PREFIX = re.compile(r"[0-9a-f]{1,16}(\.\d*)?")

ID_ARG_HELP = "an invocation id, a job id (<invocation>.<n>) or a unique prefix of one"


def check_id(value: str) -> str:
    """Reject what cannot be an invocation/job id (or a prefix) before touching the bus."""
    v = value.strip().lower()
    if not v or not _ID_PREFIX.fullmatch(v):
        raise UsageError(f"{value!r} is not an invocation or job id (16 hex characters, optionally .<n>, or a prefix)")
    return v


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """``1d``, ``12h``, ``30m``, ``2w``, ``90s`` or an ISO date/time -> unix time."""
    if value is None:
        return None
    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--since: got {value!r}; expected a duration like 1d, 12h, 30m or an ISO date") from None
    return dt.timestamp()


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (no rich import: keeps start-up fast)."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def echo_json(obj: Any) -> None:
    """Pretty JSON of a msgspec struct or plain data."""
    if isinstance(obj, dict):  # plain JSON from the fast path
        import json

        try:
            sys.stdout.write(json.dumps(obj, indent=2) + "\n")
            return
        except TypeError:
            pass
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode() + "\n")


json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable JSON output")
