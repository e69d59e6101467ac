"""CLI helpers: id checks, --since parsing, tables, settings resolution, lazy command loading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from nv_eval.client import UsageError
from nv_eval.client._settings import resolve
from nv_eval.client.commands._common import check_id, parse_since, table


@pytest.mark.parametrize("good", ["0123456789abcdef", "0123456789ABCDEF", "01ab", "0123456789abcdef.12", "0123456789abcdef."])
def test_check_id_accepts(good: str) -> None:
    assert check_id(good) == good.strip().lower()


@pytest.mark.parametrize("bad", ["", "xyz", "0123456789abcdef0", "../x", "ab cd", "abc.1.2", "*"])
def test_check_id_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        check_id(bad)


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("1d", now) == now - 86400
    assert parse_since("12h", now) == now - 12 * 3600
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2w", now) == now - 2 * 604800
    assert parse_since(None, now) is None
    assert parse_since("2026-01-02", now) is not None
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday", now)


def test_table_alignment() -> None:
    out = table(("A", "BB"), [("x", "long value"), ("yyy", None)]).splitlines()
    assert out[0] == "A    BB"
    assert out[1] == "x    long value"
    assert out[2] == "yyy"


def test_settings_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NV_EVAL_NATS_URL", raising=False)
    monkeypatch.delenv("NV_EVAL_PREFIX", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert resolve().source == "embedded" and resolve().url is None and resolve().prefix == "nveval"
    (tmp_path / "nv-eval").mkdir()
    (tmp_path / "nv-eval" / "config.toml").write_text('nats_url = "nats://cfg:4222"\nprefix = "team"\n')
    s = resolve()
    assert (s.url, s.prefix, s.source) == ("nats://cfg:4222", "team", "config")
    monkeypatch.setenv("NV_EVAL_NATS_URL", "nats://env:4222")
    s = resolve()
    assert (s.url, s.prefix, s.source) == ("nats://env:4222", "nveval", "env")


def test_status_does_not_import_heavy_modules() -> None:
    import os
    import subprocess

    from nv_eval.client._settings import DEFAULT_PREFIX
    from nv_eval.protocol import DEFAULT_PREFIX as PROTOCOL_DEFAULT

    assert DEFAULT_PREFIX == PROTOCOL_DEFAULT
    code = (
        "import sys; from nv_eval.client.cli import run_cli; assert run_cli(['status', '0123456789abcdef']) == 3;"
        "print(sorted(m for m in ('nats', 'hydra', 'rich', 'omegaconf', 'yaml', 'nv_eval.protocol') if m in sys.modules))"
    )
    env = {**os.environ, "NV_EVAL_NATS_URL": "nats://127.0.0.1:1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("text", ["0123456789abcdef", "01ab", "0123456789abcdef.3", "0123456789abcdef.", "xyz", "", "a.b",
                                  "0123456789abcdef0", "ABC", "abc.12x"])
def test_inlined_id_rule_matches_protocol(text: str) -> None:
    from nv_eval.client.commands._common import _ID_PREFIX
    from nv_eval.protocol import is_id_prefix

    assert bool(_ID_PREFIX.fullmatch(text)) == is_id_prefix(text)


def test_echo_json_plain_and_structs(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nv_eval.client.commands._common import echo_json
    from nv_eval.protocol import InvocationRecord

    inv = InvocationRecord(invocation_id="0123456789abcdef", state="running", executor="local", model_id="m",
                           output_dir="/o", created_at=1.0)
    echo_json([inv])
    echo_json({"reply": "status", "invocation": {"invocation_id": "x"}})
    out = capsys.readouterr().out
    first, second = out.split("\n]\n")
    assert json.loads(first + "]")[0]["invocation_id"] == "0123456789abcdef"
    assert json.loads(second)["reply"] == "status"
