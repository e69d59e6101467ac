"""nv-eval harness: the built-in benchmark runner (``nv-eval-harness``).

Public API: :func:`run` with :class:`RunArgs`, the task list :data:`TASKS`, the error types, and
the lm-eval-compatible building blocks used by tests and benchmarks."""

from ._errors import BadInput, EndpointUnusable, HarnessError
from ._loglik import Scored, continuation_logprob, echo_body
from ._metrics import mean_stderr, pooled_sample_stderr
from ._prompts import extract_letter
from ._runner import RunArgs, run
from ._tasks import TASKS, GenItem, McItem, TaskData, hellaswag_doc, hellaswag_preprocess, load_task

__all__ = [
    "TASKS", "BadInput", "EndpointUnusable", "GenItem", "HarnessError", "McItem", "RunArgs", "Scored", "TaskData",
    "continuation_logprob", "echo_body", "extract_letter", "hellaswag_doc", "hellaswag_preprocess",
    "load_task", "mean_stderr", "pooled_sample_stderr", "run",
]  # fmt: skip
