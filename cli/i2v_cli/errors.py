"""What can go wrong for an operator, each with its own exit code (docs/operations.md)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    """A task followed to its end did not succeed, or an AWS call failed."""
    USAGE = 2
    """Bad arguments (click's own code)."""
    NOT_FOUND = 3
    """No such stack, task, object or file."""
    DENIED = 4
    """The credentials may not make a call (AccessDenied), or there are none."""
    REFUSED = 5
    """The command does not apply to the task as it is (retry of a task still running)."""
    TIMED_OUT = 6
    """A wait ran out before the tasks ended."""


class CliError(Exception):
    """Shown on stderr as one line (main.py), the command exiting with the class's code."""

    exit_code = Exit.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CliError):
    exit_code = Exit.NOT_FOUND


class Denied(CliError):
    exit_code = Exit.DENIED


class Refused(CliError):
    exit_code = Exit.REFUSED


class WaitTimedOut(CliError):
    exit_code = Exit.TIMED_OUT


class UsageError(CliError):
    exit_code = Exit.USAGE


_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
_NOT_FOUND_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "ResourceNotFoundException", "NotFoundException"}
)
_QUEUE_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def from_aws(error: Exception) -> CliError:
    """A clear error for a failed AWS call (botocore's exceptions, imported lazily by the caller)."""
    response: Any = getattr(error, "response", None)
    if response is None:
        return _before_an_answer(error)
    code = str(response.get("Error", {}).get("Code", ""))
    message = str(response.get("Error", {}).get("Message", "")) or code
    operation = getattr(error, "operation_name", "the call")
    # Every AWS service answers a refused authorization with 403, whatever its code says.
    if code in _DENIED_CODES or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        return Denied(f"permission denied for {operation}: {message}")
    if code in _NOT_FOUND_CODES or code in _QUEUE_MISSING:
        return NotFound(f"{operation}: not found ({message})")
    return CliError(f"{operation} failed: {code}: {message}")


def _before_an_answer(error: Exception) -> CliError:
    """A call that got no answer from AWS: no credentials, no region, no endpoint."""
    kind = type(error).__name__
    if "Credentials" in kind:
        return Denied(f"no usable AWS credentials: {error}")
    if kind == "NoRegionError":
        return UsageError("no AWS region: give --region, or set AWS_REGION (or a profile's region)")
    if kind == "EndpointConnectionError":
        return CliError(f"{error}: is the stack there (for --local: is `make stack` still running)?")
    return CliError(f"AWS call failed: {error}")
