"""Follow one container's stdout or stderr live, with per-line timestamps for re-attachment.

Docker prefixes each line with an RFC 3339 timestamp (``timestamps=True``); we keep the
last one handled per stream (in nanoseconds) in the job's handle. A re-attaching watcher
asks for logs ``since`` that second and drops every line not strictly newer, so no line is
emitted twice and none is lost. Frames are re-assembled into whole lines.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiodocker.containers import DockerContainer

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def ts_to_ns(ts: str) -> int | None:
    """Nanoseconds since the epoch of a Docker log timestamp (RFC 3339, up to 9 fraction digits)."""
    m = _TS.match(ts)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = datetime.fromisoformat(m.group(1) + zone).astimezone(UTC)
    frac = (m.group(2) or "").ljust(9, "0")
    return int(base.timestamp()) * 1_000_000_000 + int(frac or 0)


async def follow_lines(
    container: DockerContainer, stream: str, after_ns: int = 0, *, follow: bool = True
) -> AsyncIterator[tuple[int, str]]:
    """Yield ``(timestamp_ns, line)`` for lines of ``stream`` newer than ``after_ns`` until the container stops."""
    kwargs: dict[str, Any] = {"timestamps": True}
    if after_ns:
        kwargs["since"] = after_ns // 1_000_000_000
    if follow:
        source = container.log(stdout=stream == "stdout", stderr=stream == "stderr", follow=True, **kwargs)
    else:
        source = _as_aiter(await container.log(stdout=stream == "stdout", stderr=stream == "stderr", **kwargs))
    buf = ""
    async for chunk in source:
        buf += chunk
        *lines, buf = buf.split("\n")
        for raw in lines:
            item = _split(raw, after_ns)
            if item is not None:
                after_ns = item[0]
                yield item
    if buf:
        item = _split(buf, after_ns)
        if item is not None:
            yield item


async def _as_aiter(items: list[str]) -> AsyncIterator[str]:
    for x in items:
        yield x


def _split(raw: str, after_ns: int) -> tuple[int, str] | None:
    ts, _, text = raw.partition(" ")
    ns = ts_to_ns(ts)
    if ns is None:  # not timestamped (should not happen): keep it, ordered after the last one
        return after_ns, raw.rstrip("\r")
    if ns <= after_ns:
        return None
    return ns, text.rstrip("\r")
