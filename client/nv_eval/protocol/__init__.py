"""nv-eval wire protocol: versioned msgspec structs, subjects, config schema, registry, planner.

Every component (client, daemon, agents, harness) depends on this package only.
"""

from ._version import PROTOCOL_VERSION
from .agents import CancelJob, ControlReply, ControlRequest, Heartbeat
from .api import (
    ApiError,
    ErrorCode,
    KillReply,
    KillRequest,
    ListRunsReply,
    ListRunsRequest,
    ListTasksReply,
    ListTasksRequest,
    ResumeReply,
    ResumeRequest,
    RunReply,
    RunRequest,
    StatusReply,
    StatusRequest,
)
from .codec import ProtocolError, decode, encode
from .config import (
    BUILTIN_EXECUTORS,
    DEPLOYMENT_TYPES,
    ApiEndpoint,
    CustomExecution,
    DeploymentConfig,
    EndpointType,
    EvaluationConfig,
    ExecutionConfig,
    GenericDeployment,
    GlobalEvalConfig,
    LeptonExecution,
    LlamaCppDeployment,
    LocalExecution,
    NimDeployment,
    NoDeployment,
    RunConfig,
    SglangDeployment,
    SlurmExecution,
    TargetConfig,
    TaskConfig,
    TaskParams,
    TrtllmDeployment,
    VllmDeployment,
    executor_name,
    infer_endpoint_type,
)
from .events import (
    DeploymentEvent,
    Event,
    LogEvent,
    ProgressEvent,
    ResultEvent,
    StatusEvent,
    event_msg_id,
)
from .ids import is_id_prefix, job_id, new_invocation_id, split_job_id
from .jobs import (
    TERMINAL_STATES,
    EndpointSpec,
    FailureKind,
    InvocationRecord,
    JobRecord,
    JobSpec,
    JobState,
    ProgressInfo,
)
from .planning import PlanError, plan_invocation
from .registry import RegistryError, load_registry, resolve_task
from .results import Metric, Results, Timings, Usage
from .subjects import API_VERBS, DEFAULT_PREFIX, EVENT_KINDS, Subjects
from .tasks import HarnessKind, TaskEntry
from .validation import ConfigError, validate_run_config

__all__ = [name for name in dir() if not name.startswith("_")]
