"""What a provider update does to a task: the callback and the reconciler share this code.

An update is recorded with one conditional write. A finished task (succeeded or failed)
moves to FINALIZING and is handed to the finalize queue, whose worker downloads the
video and ends the task (i2v/usecases/finalize.py): the webhook is answered at once,
whatever the size of the video.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from i2v.domain import ErrorInfo, Frozen, Task, TaskStatus
from i2v.errors import BadCallback, Unauthorized
from i2v.observability import logger
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.tasks.store import TaskStore, Write, token_hash_matches


class UpdateOutcome(StrEnum):
    UNCHANGED = "unchanged"
    RUNNING = "running"
    FINALIZING = "finalizing"


class FinalizeOrder(Frozen):
    """The finalize queue's message: the task as its FINALIZING write returned it, and what
    the download needs, so the finalizer reads nothing before it works."""

    task: Task
    video_url: str | None = None


EnqueueFinalize = Callable[[FinalizeOrder], None]


@dataclass(frozen=True)
class Progress:
    """What applying a provider update needs."""

    store: TaskStore
    enqueue: EnqueueFinalize
    clock: Callable[[], float]
    result_ttl_seconds: Callable[[str], float] = lambda route: 24 * 3600
    """How long route `route` keeps a finished task's video."""


def apply_update(
    task_id: str,
    update: ProviderUpdate,
    progress: Progress,
    *,
    via: str,
    token_hash: str | None = None,
    route: str | None = None,
) -> UpdateOutcome:
    """Record `update` on the task; with `token_hash`, only if that is the task's token;
    with `route`, only if the task is on that route (the route that signed a webhook).

    Raises Unauthorized (no such task, not its token, not its route) and BadCallback (the
    update is for another provider task). A write the lifecycle refuses is a no-op: a
    duplicate or late update.
    """
    store, now = progress.store, progress.clock()
    guard = partial(
        store.move,
        task_id,
        now=now,
        token_hash=token_hash,
        route=route,
        provider_task_id=update.provider_task_id,
    )
    if update.state is ProviderState.RUNNING:
        written = guard(TaskStatus.RUNNING)
        return _settled(written, update, token_hash, route, UpdateOutcome.RUNNING)
    if update.state in _FINISHED:
        outcome = TaskStatus.SUCCEEDED if update.state is ProviderState.SUCCEEDED else TaskStatus.FAILED
        error = None
        if outcome is TaskStatus.FAILED:
            error = (
                update.error
                or _FINISHED[update.state]
                or ErrorInfo(code="PROVIDER_FAILED", message=update.raw_status)
            )
        fields = _finalizing_fields(outcome, via, error)
        if outcome is TaskStatus.SUCCEEDED and route is not None:
            fields["result_expires_at"] = now + progress.result_ttl_seconds(route)
        written = guard(TaskStatus.FINALIZING, set_=fields)
        settled = _settled(written, update, token_hash, route, UpdateOutcome.FINALIZING)
        if written.task is not None:
            progress.enqueue(FinalizeOrder(task=written.task, video_url=update.video_url))
            logger.info("finalization queued", extra={"outcome": outcome.value, "via": via})
        return settled
    if token_hash is not None:
        # Nothing to write, so nothing to authenticate the callback with but a read.
        _settled(Write(None, store.get(task_id)), update, token_hash, route, UpdateOutcome.UNCHANGED)
    return UpdateOutcome.UNCHANGED


# The provider states that finish a task, with the error a GONE task fails with.
_FINISHED: dict[ProviderState, ErrorInfo | None] = {
    ProviderState.SUCCEEDED: None,
    ProviderState.FAILED: None,
    ProviderState.GONE: ErrorInfo(
        code="PROVIDER_TASK_GONE",
        message="the provider does not know the task (never created there, or expired)",
    ),
}


def begin_finalization(
    task_id: str, outcome: TaskStatus, error: ErrorInfo | None, progress: Progress, *, via: str
) -> bool:
    """Move an open task to FINALIZING with a known outcome (a deadline passed) and queue it."""
    written = progress.store.move(
        task_id, TaskStatus.FINALIZING, now=progress.clock(), set_=_finalizing_fields(outcome, via, error)
    )
    if written.task is None:
        return False
    progress.enqueue(FinalizeOrder(task=written.task))
    return True


def _finalizing_fields(outcome: TaskStatus, via: str, error: ErrorInfo | None) -> dict[str, object]:
    return {
        "owner": new_finalize_id(),
        "outcome": outcome.value,
        "completed_via": via,
        "error": error.model_dump() if error else None,
    }


def new_finalize_id() -> str:
    return f"finalize-{uuid.uuid4()}"


def _settled(
    written: Write, update: ProviderUpdate, token_hash: str | None, route: str | None, applied: UpdateOutcome
) -> UpdateOutcome:
    if written.task is not None:
        logger.set_correlation_id(written.task.task_id)
        return applied
    before = written.before
    if token_hash is not None and not token_hash_matches(before, token_hash):
        raise Unauthorized("unknown task or wrong callback token")
    if route is not None and before is not None and before.provider.name != route:
        raise Unauthorized("the callback came on another route's URL")
    if before is None:
        return UpdateOutcome.UNCHANGED  # the reconciler's task is gone (expired): nothing to do
    logger.set_correlation_id(before.task_id)
    known_id = before.provider.task_id
    if known_id is not None and known_id != update.provider_task_id:
        raise BadCallback("the update is for another provider task")
    logger.info("update not applied in the current state", extra={"current": before.status.value})
    return UpdateOutcome.UNCHANGED
