"""User-facing errors of the client: one-line messages with a documented exit code.

Exit codes: 0 ok, 1 job/eval failure, 2 usage/config error, 3 daemon/bus unreachable,
4 not found.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4


class NvEvalError(Exception):
    """Base of every client error; ``str(e)`` is one line, ``exit_code`` the process exit code."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(NvEvalError):
    """Bad command-line arguments or configuration (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigCompositionError(UsageError):
    """The config files or overrides cannot be composed or validated (exit 2)."""


class BusUnreachableError(NvEvalError):
    """The NATS server or the daemon does not answer (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class NotFoundError(NvEvalError):
    """The daemon knows no invocation or job with that id (exit 4)."""

    exit_code = EXIT_NOT_FOUND


class ApiCallError(NvEvalError):
    """The daemon answered with a typed error other than not-found."""

    exit_code = EXIT_FAILED


def from_api_error(code: str, message: str) -> NvEvalError:
    """Map an ``ApiError`` reply to the client error with the matching exit code."""
    if code == "not_found":
        return NotFoundError(message)
    if code in ("bad_request", "ambiguous", "unsupported_version"):
        return UsageError(message)
    return ApiCallError(f"daemon error ({code}): {message}")
