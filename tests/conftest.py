"""Shared fixtures: real services started once per session (NATS, SmolLM2 endpoint)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.services import Service, start_nats, start_smollm2


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real nats-server with JetStream for the whole session (tests use unique prefixes)."""
    svc = start_nats(tmp_path_factory.mktemp("nats"))
    yield svc
    svc.stop()


@pytest.fixture()
def nats_url(nats_server: Service) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """SmolLM2-135M behind llama_cpp.server with the BOS override (base URL ``.../v1``)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed; .ci/run installs it")
    svc = start_smollm2(tmp_path_factory.mktemp("llama"))
    yield svc
    svc.stop()


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> str:
    """A bus subject prefix unique to one test, so tests sharing a NATS server never collide."""
    import hashlib

    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
