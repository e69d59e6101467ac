"""Invocation and job identifiers: 16 hex chars, jobs ``<invocation>.<n>``."""

from __future__ import annotations

import re
import secrets

INVOCATION_ID_RE = re.compile(r"^[0-9a-f]{16}$")
JOB_ID_RE = re.compile(r"^([0-9a-f]{16})\.(\d+)$")


def new_invocation_id() -> str:
    return secrets.token_hex(8)


def job_id(invocation_id: str, index: int) -> str:
    return f"{invocation_id}.{index}"


def split_job_id(jid: str) -> tuple[str, int]:
    m = JOB_ID_RE.match(jid)
    if not m:
        raise ValueError(f"not a job id: {jid!r} (expected <16 hex chars>.<n>)")
    return m.group(1), int(m.group(2))


def is_id_prefix(text: str) -> bool:
    """True when ``text`` can be a prefix of an invocation or job id."""
    return bool(re.fullmatch(r"[0-9a-f]{1,16}(\.\d*)?", text))
