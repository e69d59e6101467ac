"""Bad input of every kind (configs, overrides, ids, CLI args, settings) gives one line on stderr,
the documented non-zero exit code, and starts/writes nothing (no embedded stack, no output dir).

Runs the real ``nv-eval`` entry point in a subprocess; the not-found cases talk to a real
daemon on a real nats-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nv_eval.client import _fastnats

GOOD = """\
defaults:
  - execution: local
  - deployment: none
  - _self_
execution:
  output_dir: ./results
target:
  api_endpoint:
    url: http://localhost:8080/v1/chat/completions
    model_id: m
evaluation:
  tasks:
    - name: hellaswag
"""

CONFIGS = {
    "good": GOOD,
    "slurm": GOOD.replace("execution: local", "execution: slurm"),
    "yaml_error": "defaults: [execution: local\ntarget: {",
    "unknown_top": GOOD + "targte: {}\n",
    "typo_key": GOOD.replace("execution: local", "execution: slurm").replace("output_dir: ./results", "nodse: 1"),
    "bad_group": GOOD.replace("execution: local", "execution: kubernetes"),
    "unknown_task": GOOD.replace("hellaswag", "hellaswg"),
    "no_tasks": GOOD.replace("    - name: hellaswag\n", "").replace("  tasks:\n", "  tasks: []\n"),
    "no_url": GOOD.replace("    url: http://localhost:8080/v1/chat/completions\n", ""),
    "bad_dep_type": GOOD + "deployment:\n  type: vlm\n",
    "secret_value": GOOD.replace("model_id: m", "model_id: m\n    api_key_name: sk-THIS-IS-SECRET-123"),
    "neg_limit": GOOD.replace("- name: hellaswag", "- name: hellaswag\n      params: {limit_samples: -5}"),
    "bad_runtime": GOOD.replace("output_dir: ./results", "output_dir: ./results\n  runtime: podman"),
    "list_top": "- a\n- b\n",
    "interp": GOOD.replace("output_dir: ./results", "output_dir: ${nowhere}"),
    "ambiguous_url": GOOD.replace("/v1/chat/completions", "/v1"),
}

VALID_ID = "0123456789abcdef"

# (id, argv, expected exit code, needle in the error line)
CASES: list[tuple[str, list[str], int, str]] = [
    # configs
    ("missing-config", ["run", "--config-dir", "cfg", "--config-name", "nope"], 2, "no config 'nope'"),
    ("config-dir-not-dir", ["run", "--config-dir", "missing", "--config-name", "good"], 2, "is not a directory"),
    ("yaml-error", ["run", "--config-dir", "cfg", "--config-name", "yaml_error"], 2, "yaml_error"),
    ("unknown-top-key", ["run", "--config-dir", "cfg", "--config-name", "unknown_top"], 2, "did you mean 'target'"),
    ("typo-key", ["run", "--config-dir", "cfg", "--config-name", "typo_key"], 2, "execution.nodse: unknown key; did you mean 'nodes'"),
    ("bad-group", ["run", "--config-dir", "cfg", "--config-name", "bad_group"], 2, "'kubernetes'"),
    ("unknown-task", ["run", "--config-dir", "cfg", "--config-name", "unknown_task"], 2, "did you mean hellaswag"),
    ("no-tasks", ["run", "--config-dir", "cfg", "--config-name", "no_tasks"], 2, "evaluation.tasks is empty"),
    ("no-url", ["run", "--config-dir", "cfg", "--config-name", "no_url"], 2, "target.api_endpoint.url is required"),
    ("bad-deployment-type", ["run", "--config-dir", "cfg", "--config-name", "bad_dep_type"], 2, "deployment.type: got 'vlm'"),
    ("secret-in-name", ["run", "--config-dir", "cfg", "--config-name", "secret_value", "--dry-run"], 2, "NAME of an environment variable"),
    ("negative-limit", ["run", "--config-dir", "cfg", "--config-name", "neg_limit"], 2, "limit_samples: expected int >= 1, got -5"),
    ("bad-runtime", ["run", "--config-dir", "cfg", "--config-name", "bad_runtime"], 2, "expected one of docker, process; got 'podman'"),
    ("list-top", ["run", "--config-dir", "cfg", "--config-name", "list_top"], 2, "list_top"),
    ("interpolation", ["run", "--config-dir", "cfg", "--config-name", "interp"], 2, "nowhere"),
    ("ambiguous-url", ["run", "--config-dir", "cfg", "--config-name", "ambiguous_url"], 2, "target.api_endpoint.type is needed"),
    # overrides
    ("ov-missing-key", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "foo=1"], 2, "use +foo=VALUE"),
    ("ov-add-existing", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "+execution.output_dir=x"], 2, "already exists"),
    ("ov-delete-missing", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "~nope"], 2, "'nope' is not in the config"),
    ("ov-parse", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "a=b=c"], 2, "not a valid override"),
    ("ov-bad-group", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "execution=kubernetes"], 2, "available: lepton, local, slurm"),
    ("ov-typed", ["run", "--config-dir", "cfg", "--config-name", "slurm", "-o", "execution.nodes=abc"], 2, "execution.nodes: expected int, got 'abc'"),
    ("ov-task", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "evaluation.tasks=[{name: mmlu_pro_x}]"], 2, "unknown task"),
    ("ov-hydra", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "hydra.run.dir=x"], 2, "hydra.*"),
    ("ov-empty-output", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "execution.output_dir="], 2, "must not be empty"),
    ("ov-no-equals", ["run", "--config-dir", "cfg", "--config-name", "good", "-o", "justakey"], 2, "expected key=value"),
    # CLI args
    ("unknown-command", ["bogus"], 2, "no such command 'bogus'"),
    ("run-no-name", ["run", "--config-dir", "cfg"], 2, "--config-name"),
    ("run-bad-flag", ["run", "--config-name", "good", "--bogus-flag"], 2, "--bogus-flag"),
    ("export-format", ["export", VALID_ID, "--format", "xml"], 2, "xml"),
    ("export-dest", ["export", VALID_ID, "--dest", "nowhere"], 2, "available destinations: local"),
    ("since", ["ls", "runs", "--since", "yesterday"], 2, "--since: got 'yesterday'"),
    ("status-no-id", ["status"], 2, "Missing argument"),
    ("ls-tasks-dir", ["ls", "tasks", "--config-dir", "missing"], 2, "is not a directory"),
    ("agent-executor", ["agent", "start", "--executor", "Bad!"], 2, "--executor: got 'Bad!'"),
    ("status-interval", ["status", VALID_ID, "--interval", "0"], 2, "--interval"),
    ("ls-unknown", ["ls", "jobs"], 2, "jobs"),
    # ids
    ("id-not-hex", ["status", "zzz"], 2, "not an invocation or job id"),
    ("id-path", ["kill", "../etc"], 2, "not an invocation or job id"),
    ("id-space", ["logs", "abc def"], 2, "not an invocation or job id"),
    ("id-empty", ["resume", ""], 2, "not an invocation or job id"),
    ("id-too-long", ["export", VALID_ID + "0"], 2, "not an invocation or job id"),
]

# need the real daemon (configured bus): unknown ids -> 4; nobody serving -> 3
DAEMON_CASES: list[tuple[str, list[str], int, str]] = [
    ("status-unknown", ["status", VALID_ID], 4, VALID_ID),
    ("kill-unknown", ["kill", "fedcba9876543210"], 4, "fedcba9876543210"),
    ("export-unknown", ["export", "fedcba98", "--format", "json"], 4, "fedcba98"),
    ("logs-unknown", ["logs", "abcdef0123456789.3"], 4, "abcdef0123456789"),
    ("resume-unknown", ["resume", "abcdef0123456789"], 4, "abcdef0123456789"),
]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NV_EVAL_")}
    env.update(NV_EVAL_HOME=str(tmp / "home"), XDG_CONFIG_HOME=str(tmp / "xdg"), NO_COLOR="1", **extra)
    return env


def _nv_eval(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nv_eval.client.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    cfg = tmp_path / "work" / "cfg"
    cfg.mkdir(parents=True)
    for name, text in CONFIGS.items():
        (cfg / f"{name}.yaml").write_text(text)
    return tmp_path / "work"


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_one_line_failure(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("nv-eval: error: ")
    assert needle in err, err


@pytest.mark.parametrize(("argv", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv: list[str], code: int, needle: str, workdir: Path, tmp_path: Path) -> None:
    before = _snapshot(workdir)
    r = _nv_eval(argv, workdir, _env(tmp_path))
    _assert_one_line_failure(r, code, needle)
    assert "THIS-IS-SECRET" not in r.stderr + r.stdout
    assert _snapshot(workdir) == before  # no output dir, nothing written
    assert not (tmp_path / "home" / "embedded.json").exists()  # nothing started


@pytest.mark.parametrize(
    ("extra_env", "argv", "code", "needle"),
    [
        ({"NV_EVAL_PREFIX": "a b"}, ["status", VALID_ID], 2, "prefix 'a b'"),
        ({"NV_EVAL_NATS_URL": "nats://127.0.0.1:1"}, ["status", VALID_ID], 3, "cannot reach NATS"),
        ({"NV_EVAL_NATS_URL": "nats://127.0.0.1:1"}, ["run", "--config-dir", "cfg", "--config-name", "good"], 3, "cannot reach NATS"),
    ],
    ids=["bad-prefix", "unreachable-status", "unreachable-run"],
)
def test_bad_settings(extra_env: dict[str, str], argv: list[str], code: int, needle: str, workdir: Path, tmp_path: Path) -> None:
    before = _snapshot(workdir)
    r = _nv_eval(argv, workdir, _env(tmp_path, **extra_env))
    _assert_one_line_failure(r, code, needle)
    assert _snapshot(workdir) == before
    assert not (tmp_path / "home" / "embedded.json").exists()


def test_bad_config_file(workdir: Path, tmp_path: Path) -> None:
    (tmp_path / "xdg" / "nv-eval").mkdir(parents=True)
    (tmp_path / "xdg" / "nv-eval" / "config.toml").write_text('nats_url = "nats://x:1"\nprefx = "a"\n')
    r = _nv_eval(["status", VALID_ID], workdir, _env(tmp_path))
    _assert_one_line_failure(r, 2, "unknown key 'prefx'")
    assert not (tmp_path / "home" / "embedded.json").exists()


@pytest.fixture()
def daemon(nats_url: str, prefix: str, tmp_path: Path) -> Iterator[None]:
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nv_eval.daemon", "--nats-url", nats_url, "--prefix", prefix,
         "--data-dir", str(tmp_path / "daemon")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _fastnats.request(nats_url, f"{prefix}.api.list_tasks", b"{}", timeout=1)
                break
            except (_fastnats.NoResponders, TimeoutError, OSError):
                assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
                assert time.monotonic() < deadline, "daemon did not answer"
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.parametrize(("argv", "code", "needle"), [c[1:] for c in DAEMON_CASES], ids=[c[0] for c in DAEMON_CASES])
def test_not_found_with_real_daemon(
    argv: list[str], code: int, needle: str, daemon: None, nats_url: str, prefix: str, workdir: Path, tmp_path: Path
) -> None:
    before = _snapshot(workdir)
    r = _nv_eval(argv, workdir, _env(tmp_path, NV_EVAL_NATS_URL=nats_url, NV_EVAL_PREFIX=prefix))
    _assert_one_line_failure(r, code, needle)
    assert _snapshot(workdir) == before


def test_no_daemon_on_configured_bus(nats_url: str, prefix: str, workdir: Path, tmp_path: Path) -> None:
    r = _nv_eval(["status", VALID_ID], workdir, _env(tmp_path, NV_EVAL_NATS_URL=nats_url, NV_EVAL_PREFIX=prefix + "x"))
    _assert_one_line_failure(r, 3, "no daemon answers")
    assert not (tmp_path / "home" / "embedded.json").exists()
