"""Harness error types, each mapped to the exit code of the harness command contract."""

from __future__ import annotations


class HarnessError(Exception):
    """A failure with a one-line message and the exit code the command returns for it."""

    exit_code = 1


class BadInput(HarnessError):
    """Bad parameters, task name or data (exit 2)."""

    exit_code = 2


class EndpointUnusable(HarnessError):
    """The probe refused the endpoint: unreachable, unknown model, broken echo/logprobs (exit 3)."""

    exit_code = 3
