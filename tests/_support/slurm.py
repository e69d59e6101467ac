"""Slurm/sshd test support: fixtures checking the real services, a recording JobContext,
job specs for the slurm executor, and a small counting proxy in front of the model.

The services are real: the single-node Slurm of ``scripts/start-slurm.sh`` and the sshd
of ``scripts/start-sshd.sh`` (127.0.0.1:2222, keys under /etc/nv-eval-test/ssh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from nv_eval.protocol import (
    EndpointSpec,
    JobSpec,
    Results,
    SlurmExecution,
    TaskEntry,
    TaskParams,
    job_id,
    new_invocation_id,
)

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = Path(os.environ.get("SSHD_DIR", "/etc/nv-eval-test/ssh"))
SSH_PORT = int(os.environ.get("SSHD_PORT", "2222"))
HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")


def _ok(cmd: Sequence[str]) -> bool:
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The real single-node Slurm; started by scripts/start-slurm.sh if it is not up. Returns the node name."""
    if shutil.which("sbatch") is None:
        pytest.fail("Slurm is not installed; .ci/run installs slurmctld slurmd slurm-client munge")
    if not _ok(["sinfo", "-h"]):
        subprocess.run(["bash", str(REPO / "scripts" / "start-slurm.sh")], check=True, timeout=60)
    resume_node()
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[0]


def resume_node() -> None:
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%T"], capture_output=True, text=True, timeout=10).stdout
    for ln in node.splitlines():
        name, state = ln.split("|", 1)
        if not state.startswith(("idle", "mixed", "alloc")):
            subprocess.run(["scontrol", "update", f"NodeName={name}", "State=RESUME"], capture_output=True, timeout=10)


@pytest.fixture(scope="session")
def sshd_login() -> dict[str, Any]:
    """The real sshd on 127.0.0.1:2222 (scripts/start-sshd.sh); the execution fields to reach it."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("openssh-server is not installed; .ci/run installs it")
    start_sshd()
    return ssh_fields()


def start_sshd() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "start-sshd.sh")], check=True, timeout=30, capture_output=True)


def stop_sshd() -> None:
    """Stop the test sshd: its listener (pid file) and its per-connection children, by pid."""
    pid = int((SSH_DIR / "sshd.pid").read_text().strip())
    children = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(d.name))
    for p in [pid, *children]:
        try:
            os.kill(p, 15)
        except ProcessLookupError:
            pass


def ssh_fields() -> dict[str, Any]:
    return {
        "hostname": "127.0.0.1",
        "port": SSH_PORT,
        "username": "root",
        "identity_file": str(SSH_DIR / "id_ed25519"),
        "known_hosts": str(SSH_DIR / "known_hosts"),
    }


def slurm_job(
    tmp: Path,
    *,
    task: str = "arc_easy",
    index: int = 0,
    invocation_id: str | None = None,
    endpoint_url: str = "http://127.0.0.1:9/v1",
    model_id: str = "smollm2-135m-instruct",
    params: TaskParams | None = None,
    api_key_name: str | None = None,
    endpoint_type: Literal["completions", "chat"] = "completions",
    deployment: Any = None,
    deployment_group: str | None = None,
    **execution: Any,
) -> JobSpec:
    inv = invocation_id or new_invocation_id()
    execution.setdefault("output_dir", str(tmp))
    execution.setdefault("container_runtime", "none")
    execution.setdefault("harness_command", HARNESS)
    execution.setdefault("placement", "task")
    execution.setdefault("poll_interval", 0.5)
    return JobSpec(
        job_id=job_id(inv, index),
        invocation_id=inv,
        index=index,
        task=TaskEntry(name=task),
        params=params or TaskParams(limit_samples=4),
        endpoint=EndpointSpec(
            url=None if deployment is not None else endpoint_url, model_id=model_id, type=endpoint_type,
            api_key_name=api_key_name,
        ),
        execution=SlurmExecution(**execution),
        deployment=deployment,
        deployment_group=deployment_group,
        invocation_dir=str(tmp / inv),
        task_dir=str(tmp / inv / task),
    )


@dataclass
class RecordingContext:
    """A JobContext that records every call (the base loop's context publishes them instead)."""

    job: JobSpec
    agent_id: str = "test-agent"
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    statuses: list[tuple[str, str | None]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    progress_events: list[tuple[int, int]] = field(default_factory=list)
    results: list[Results] = field(default_factory=list)
    handles: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)

    async def status(self, state: Any, message: str | None = None, failure_kind: Any = None, exit_code: Any = None) -> None:
        self.statuses.append((state, message))

    async def log(self, lines: Sequence[str], stream: str = "stdout") -> None:
        self.logs.extend((stream, ln) for ln in lines)

    async def progress(self, done: int, total: int, rps: float | None = None, eta_s: float | None = None) -> None:
        self.progress_events.append((done, total))

    async def result(self, results: Results) -> None:
        self.results.append(results)

    async def deployment(self, deployment_id: str, state: str, *a: Any, **kw: Any) -> None:
        self.deployments.append(state)

    async def save_handle(self, handle: dict[str, Any]) -> None:
        import copy

        self.handles.append(copy.deepcopy(handle))

    @property
    def handle(self) -> dict[str, Any]:
        return self.handles[-1]

    def text(self) -> str:
        return "\n".join(f"{s}: {ln}" for s, ln in self.logs)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10).stdout
    return set(out.split())


class CountingProxy:
    """A real HTTP proxy in front of the model that counts POSTed completion requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:P/v1
        self.posts = 0
        self.delay = 0.0
        self._lock = threading.Lock()
        proxy = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = None
                if method == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n)
                    with proxy._lock:
                        proxy.posts += 1
                    if proxy.delay:
                        import time

                        time.sleep(proxy.delay)
                path = self.path[3:] if self.path.startswith("/v1") else self.path
                req = urllib.request.Request(proxy.upstream + path, data=body, method=method)
                req.add_header("Content-Type", self.headers.get("Content-Type", "application/json"))
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        data, code = r.read(), r.status
                except urllib.error.HTTPError as e:
                    data, code = e.read(), e.code
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def counting_proxy(smollm2: Any) -> Iterator[CountingProxy]:
    with CountingProxy(smollm2.url) as p:
        yield p
