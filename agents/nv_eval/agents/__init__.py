"""nv-eval agents: the base agent loop and one runtime per environment."""

from ._runtime import JobContext, Outcome, Runtime

__all__ = ["JobContext", "Outcome", "Runtime"]
