"""Provider attempts: every paid call a task made, kept as evidence for refunds.

Each submission's answer is appended to the task's `attempts` list in the write that
records it (accepted: mark_submitted; refused: the end; unavailable: the release; no
answer: the hold), so the happy path makes no extra call. An accepted or unanswered
attempt ends when its task ends: its end is the task's terminal record (status,
`finished_at`, video, error, `cancelled_at`), written in that same end write and read
back here (`with_end`), so no write has to know the attempt's position in the list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from i2v.domain import Task


class AttemptOutcome(StrEnum):
    # What the submission's answer was; the first two stay until the task ends.
    ACCEPTED = "accepted"
    """The provider made a task (its id is recorded)."""
    UNCONFIRMED = "unconfirmed"
    """No answer came: the provider may have made (and may bill) a task."""
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    # How an accepted or unconfirmed attempt ended.
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    """Timed out here, and the provider was asked to stop it."""


OPEN_OUTCOMES = frozenset({AttemptOutcome.ACCEPTED, AttemptOutcome.UNCONFIRMED})


class AttemptError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    code: str
    message: str


class Attempt(BaseModel):
    """One submission to one route, as stored in the task's `attempts` list."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    route: str
    provider_task_id: str | None = None
    started_at: float
    ended_at: float | None = None
    outcome: AttemptOutcome
    error: AttemptError | None = None
    estimated_charge_usd: float | None = None
    """The route's estimate for the task when the provider may have taken it; 0 for an
    attempt it refused or could not take; None for a route with no published price."""


def with_end(task: Task) -> list[Attempt]:
    """The task's attempts, the open one (accepted or unconfirmed) ended as the task ended.

    An unconfirmed attempt whose webhook later named the provider's task gets that id.
    """
    return [
        _ended(attempt, task) if attempt.outcome in OPEN_OUTCOMES else attempt for attempt in task.attempts
    ]


def _ended(attempt: Attempt, task: Task) -> Attempt:
    from i2v.domain import TaskStatus

    update: dict[str, Any] = {}
    if attempt.provider_task_id is None and task.provider.task_id is not None:
        update["provider_task_id"] = task.provider.task_id
    if task.status.is_terminal:
        outcome = AttemptOutcome.FAILED
        if task.status is TaskStatus.SUCCEEDED:
            outcome = AttemptOutcome.SUCCEEDED
        elif task.status is TaskStatus.TIMED_OUT:
            outcome = AttemptOutcome.CANCELLED if task.cancelled_at is not None else AttemptOutcome.TIMED_OUT
        update |= {"ended_at": task.finished_at, "outcome": outcome}
        if task.error is not None and attempt.error is None:
            update["error"] = AttemptError(code=task.error.code, message=task.error.message)
    return attempt.model_copy(update=update)


def billed_without_video(task: Task) -> list[Attempt]:
    """The attempts a provider may have billed that produced no video: each one it took
    (or may have taken: no answer came) whose task has ended without a video from it.
    Attempts still running are not in it: they may yet bring one."""
    if not task.status.is_terminal:
        return []
    return [
        ended
        for stored, ended in zip(task.attempts, with_end(task), strict=True)
        if stored.outcome in OPEN_OUTCOMES and ended.outcome is not AttemptOutcome.SUCCEEDED
    ]


REFUND_COLUMNS = (
    "provider",
    "provider_task_id",
    "task_id",
    "started_at",
    "ended_at",
    "outcome",
    "error_code",
    "error_message",
    "estimated_charge_usd",
    "resolution",
    "duration_seconds",
    "model",
    "source_key",
    "source_uri",
)
"""The fields of a refund row, in order (a CSV export's header)."""


def refund_rows(task: Task) -> list[dict[str, Any]]:
    """One flat row per attempt in `billed_without_video`, with what a provider's support
    asks for to credit it: their task id, when, what happened, and what it should cost."""
    source = task.source
    return [
        {
            "provider": attempt.route,
            "provider_task_id": attempt.provider_task_id,
            "task_id": task.task_id,
            "started_at": _iso(attempt.started_at),
            "ended_at": _iso(attempt.ended_at),
            "outcome": attempt.outcome.value,
            "error_code": attempt.error.code if attempt.error else None,
            "error_message": attempt.error.message if attempt.error else None,
            "estimated_charge_usd": attempt.estimated_charge_usd,
            "resolution": task.options.resolution,
            "duration_seconds": task.options.duration,
            "model": task.options.model,
            "source_key": source.key,
            "source_uri": f"s3://{source.bucket}/{source.key}",
        }
        for attempt in billed_without_video(task)
    ]


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
