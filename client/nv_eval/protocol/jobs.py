"""Job specs sent to agents, job states, and the daemon's job/invocation records."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from ._version import PROTOCOL_VERSION
from .config import DeploymentConfig, EndpointType, ExecutionConfig, TaskParams
from .results import Metric
from .tasks import TaskEntry

JobState = Literal["pending", "dispatched", "deploying", "running", "succeeded", "failed", "killed", "lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "killed"})
FailureKind = Literal["evaluation", "infrastructure"]


class EndpointSpec(Struct, kw_only=True, omit_defaults=True):
    url: str | None  # None when a deployment provides it
    model_id: str
    type: EndpointType
    api_key_name: str | None = None  # env var NAME


class JobSpec(Struct, kw_only=True, omit_defaults=True):
    """Everything an agent needs to run one task of an invocation."""

    job_id: str
    invocation_id: str
    index: int
    task: TaskEntry
    params: TaskParams  # registry defaults < config.params < evaluation.params < task params
    endpoint: EndpointSpec
    execution: ExecutionConfig
    deployment: DeploymentConfig | None = None  # None: no deployment
    deployment_group: str | None = None  # jobs with the same group share one deployment
    group_jobs: list[str] = []  # all job ids of that group (the last to end tears it down)
    invocation_dir: str  # <output_dir>/<invocation_id>
    task_dir: str  # <invocation_dir>/<task dir name>
    attempt: int = 1
    created_at: float = 0.0
    v: int = PROTOCOL_VERSION


class ProgressInfo(Struct, omit_defaults=True):
    done: int
    total: int
    rps: float | None = None
    eta_s: float | None = None


class JobRecord(Struct, kw_only=True, omit_defaults=True):
    job_id: str
    invocation_id: str
    index: int
    task: str
    executor: str
    state: JobState
    task_dir: str
    agent_id: str | None = None
    attempt: int = 1
    message: str | None = None
    failure_kind: FailureKind | None = None
    exit_code: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    progress: ProgressInfo | None = None
    metrics: dict[str, Metric] = {}
    last_seq: int = 0


class InvocationRecord(Struct, kw_only=True, omit_defaults=True):
    invocation_id: str
    state: str  # pending | running | succeeded | failed | killed (derived from jobs)
    executor: str
    model_id: str
    output_dir: str
    created_at: float
    jobs: list[JobRecord] = []
