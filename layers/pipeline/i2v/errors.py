"""Domain errors, raised below the handlers and mapped to answers at the edge.

Each carries a stable machine-readable `code` (it ends up in notifications) and a
human-readable message that says what is wrong and, where useful, what to do.
"""

from __future__ import annotations


class PipelineError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(PipelineError):
    """The upload cannot become a video as it is: the task is REJECTED, nothing is paid."""

    code = "INVALID_INPUT"


class InvalidImage(InvalidInput):
    code = "INVALID_IMAGE"


class InvalidOptions(InvalidInput):
    code = "INVALID_OPTIONS"


class RetryLater(PipelineError):
    """The work cannot be done now but may be later: its queue message comes back after a
    backoff, never sooner than `retry_after` seconds; nothing is dropped."""

    code = "RETRY_LATER"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ProviderUnavailable(RetryLater):
    """A transient provider failure (429, 5xx, timeout): retry later, never drop the task."""

    code = "PROVIDER_UNAVAILABLE"


class ProviderOutcomeUnknown(ProviderUnavailable):
    """The request reached the provider but no answer came back (a read timeout, a reset
    after sending): a create call may have made a task. Never resubmitted blindly, never
    failed over; resolved against the same route first."""

    code = "PROVIDER_OUTCOME_UNKNOWN"


class ProviderRejected(PipelineError):
    """The provider refused the task for good (validation error, bad key): the task FAILS."""

    code = "PROVIDER_REJECTED"


class Unauthorized(PipelineError):
    """A callback whose token or signature does not check out."""

    code = "UNAUTHORIZED"


class BadCallback(PipelineError):
    """A callback that is authentic but cannot be parsed."""

    code = "BAD_CALLBACK"


class DownloadFailed(PipelineError):
    """Fetching the finished video failed.

    `permanent` failures (a host off the allow-list, a private address, a wrong content
    type, a video over the size cap) end the task; transient ones leave it to be retried.
    """

    code = "DOWNLOAD_FAILED"

    def __init__(self, message: str, *, permanent: bool, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.permanent = permanent
