"""nv-eval agents: the base agent loop and one runtime per environment.

Public API: :class:`Agent` (the loop), :class:`Executor` (plugin contract, entry point group
``nv_eval.executors``), :class:`Runtime`/:class:`JobContext`/:class:`Outcome`/:class:`JobFailed`
(runtime contract), :class:`AgentEnv`, :func:`load_executor`, and harness command helpers.
"""

from ._executor import EXECUTORS_GROUP, AgentEnv, Executor, ExecutorNotFound, load_executor
from ._harness import HARNESS_CMD_ENV, default_harness_command, endpoint_url_for, harness_run_args
from ._loop import Agent
from ._runtime import JobContext, JobFailed, Outcome, Runtime
from ._state import AgentState, DataDirBusy, JobEntry

__all__ = [
    "EXECUTORS_GROUP",
    "HARNESS_CMD_ENV",
    "Agent",
    "AgentEnv",
    "AgentState",
    "DataDirBusy",
    "Executor",
    "ExecutorNotFound",
    "JobContext",
    "JobEntry",
    "JobFailed",
    "Outcome",
    "Runtime",
    "default_harness_command",
    "endpoint_url_for",
    "harness_run_args",
    "load_executor",
]
