"""The async SDK against the real daemon on a real nats-server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nv_eval.client import Client, NotFoundError, _fastnats, compose_run


@pytest.fixture()
def daemon(nats_url: str, prefix: str, tmp_path: Path) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "nv_eval.daemon", "--nats-url", nats_url, "--prefix", prefix,
                             "--data-dir", str(tmp_path / "d")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _fastnats.request(nats_url, f"{prefix}.api.list_tasks", b"{}", timeout=1)
                break
            except (_fastnats.NoResponders, TimeoutError, OSError):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def test_sdk_roundtrip(daemon: None, nats_url: str, prefix: str, tmp_path: Path, repo_root: Path) -> None:
    async with await Client.connect(nats_url, prefix) as c:
        names = {t.name for t in await c.list_tasks()}
        assert {"arc_challenge", "hellaswag"} <= names
        with pytest.raises(NotFoundError):
            await c.status("0123456789abcdef")
        run = compose_run("local_llama_3_1_8b_instruct", repo_root / "examples",
                          [f"execution.output_dir={tmp_path / 'out'}", "execution.runtime=process",
                           "execution.pool=nobody"], cwd=tmp_path)
        inv = await c.run(run)
        assert len(inv.jobs) == 3 and inv.output_dir == str(tmp_path / "out")
        st = await c.status(inv.invocation_id[:10])
        assert st.invocation.invocation_id == inv.invocation_id
        assert inv.invocation_id in {i.invocation_id for i in await c.list_runs()}
        events = [e async for e in c.events(inv.invocation_id, follow=False)]
        assert all(e.invocation_id == inv.invocation_id for e in events)
        killed = await c.kill(inv.invocation_id)
        assert killed.invocation_id == inv.invocation_id
        assert [e async for e in c.events("fedcba9876543210", follow=False)] == []
