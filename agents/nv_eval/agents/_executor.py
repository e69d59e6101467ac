"""The Executor plugin contract (entry point group ``nv_eval.executors``) and its loader.

An executor names an environment (``local``, ``slurm``, ``lepton``, a user's own) and
picks the :class:`~nv_eval.agents.Runtime` for each job. The agent binds it to an
:class:`AgentEnv` (data dir, agent id, a way to spawn background tasks) before use;
``describe`` works unbound (dry-run) and must not start or write anything.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from nv_eval.protocol import JobSpec

from ._runtime import Runtime
from ._state import AgentState

EXECUTORS_GROUP = "nv_eval.executors"


@dataclass
class AgentEnv:
    """What an agent gives its executor and runtimes."""

    agent_id: str
    pool: str
    data_dir: Path
    state: AgentState
    # start a background task in the agent's task group (lives until the agent stops)
    spawn: Callable[[Callable[[], Awaitable[Any]]], None]
    settings: dict[str, Any] = field(default_factory=dict)

    def runtime_state(self, name: str) -> dict[str, Any]:
        return self.state.runtime_state(name)

    def save_runtime_state(self, name: str, data: dict[str, Any]) -> None:
        self.state.save_runtime_state(name, data)


class Executor(abc.ABC):
    """One environment's executor: a no-argument constructor, ``name``, ``describe``, ``runtime_for``."""

    name: str = ""

    def __init__(self) -> None:
        self.env: AgentEnv | None = None

    def bind(self, env: AgentEnv) -> None:
        """Called once by the agent before any ``runtime_for``/``runtimes``."""
        self.env = env

    @abc.abstractmethod
    def describe(self, jobs: Sequence[JobSpec]) -> str:
        """Dry-run: exactly what would be launched for these jobs; starts and writes nothing."""

    @abc.abstractmethod
    def runtime_for(self, job: JobSpec) -> Runtime:
        """The runtime that runs ``job`` (raise ``ValueError`` with a clear message if none fits)."""

    def runtimes(self) -> Sequence[Runtime]:
        """Every runtime this executor can use on this agent (for capabilities and ``recover``)."""
        return ()

    def capabilities(self) -> list[str]:
        caps: list[str] = []
        for rt in self.runtimes():
            for c in (rt.name, *rt.capabilities):
                if c not in caps:
                    caps.append(c)
        return caps

    async def aclose(self) -> None:
        for rt in self.runtimes():
            await rt.aclose()


class ExecutorNotFound(LookupError):
    pass


def load_executor(name: str) -> Executor:
    """Instantiate the executor registered under ``name`` in the ``nv_eval.executors`` group."""
    eps = {ep.name: ep for ep in entry_points(group=EXECUTORS_GROUP)}
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(eps)) or "none"
        raise ExecutorNotFound(f"unknown executor {name!r} (installed: {known})")
    cls = ep.load()
    inst = cls()
    if not isinstance(inst, Executor):
        raise ExecutorNotFound(f"executor {name!r} ({ep.value}) is not an nv_eval.agents.Executor")
    return inst
