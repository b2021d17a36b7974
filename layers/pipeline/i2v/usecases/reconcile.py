"""Reconcile: the safety net for missed webhooks, lost finalize orders, failed
notifications and tasks that never end. It ends nothing itself: what it finds finished
(or past its deadline) goes to the finalize queue, like a webhook's outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from i2v.domain import ErrorInfo, Task, TaskStatus
from i2v.errors import PipelineError
from i2v.observability import logger
from i2v.providers.base import Provider, ProviderState
from i2v.tasks.lifecycle import may_move
from i2v.usecases.outcome import Endings
from i2v.usecases.progress import FinalizeOrder, Progress, apply_update, begin_finalization, new_finalize_id

# A run stops starting work this close to its Lambda timeout; the next run carries on.
_RESERVE_SECONDS = 60


@dataclass(frozen=True)
class ReconcileConfig:
    reconcile_after_seconds: int
    task_deadline_seconds: int
    finalize_stale_seconds: int
    unconfirmed_hold_seconds: int = 1800
    max_tasks: int = 200


def reconcile(
    *,
    config: ReconcileConfig,
    providers: Callable[[str], Provider],
    progress: Progress,
    endings: Endings,
    resume: Callable[[str], None] = lambda task_id: None,
    time_left: Callable[[], float] = lambda: float("inf"),
) -> Counter[str]:
    """Visit open tasks unchanged for `reconcile_after_seconds`; returns what was done.

    A deferred task is met once its day has come (its `open_since` is then): `resume`
    sends it back to the uploads queue, which submits it.

    Each task is polled through the route recorded on it (`providers(name)`), never the
    stack's current one: changing the primary route leaves tasks in flight where they are.
    """
    report: Counter[str] = Counter()
    older_than = progress.clock() - config.reconcile_after_seconds
    # The soonest-expiring provider results first: a video found late may be gone.
    tasks = sorted(
        progress.store.list_open(older_than=older_than, limit=config.max_tasks),
        key=lambda task: task.result_expires_at if task.result_expires_at is not None else float("inf"),
    )
    for task in tasks:
        if time_left() < _RESERVE_SECONDS:
            report["stopped_early"] += 1
            break
        logger.set_correlation_id(task.task_id)
        try:
            report[_visit(task, config, providers, progress, endings, resume)] += 1
        except PipelineError as exc:
            logger.warning("task not reconciled this time", extra={"code": exc.code, "reason": exc.message})
            report["errors"] += 1
    logger.set_correlation_id(None)
    return report


def _visit(
    task: Task,
    config: ReconcileConfig,
    providers: Callable[[str], Provider],
    progress: Progress,
    endings: Endings,
    resume: Callable[[str], None],
) -> str:
    now = progress.clock()
    if task.status.is_terminal:
        return _renotify(task, progress, endings)
    if task.status is TaskStatus.DEFERRED:
        return _resume(task, resume)
    # A deferred task's time counts from when it came back, not from its upload.
    past_deadline = now - (task.resumed_at or task.received_at) > config.task_deadline_seconds
    if task.status is TaskStatus.FINALIZING:
        return _revive_finalization(task, config, progress, now=now, past_deadline=past_deadline)
    if past_deadline:
        error = ErrorInfo(
            code="TIMED_OUT",
            message=f"no result within {config.task_deadline_seconds} s (last state {task.status.value})",
        )
        queued = begin_finalization(task.task_id, TaskStatus.TIMED_OUT, error, progress, via="reconcile")
        return "timed_out" if queued else "unchanged"
    if task.status is TaskStatus.UNCONFIRMED:
        return _settle_unconfirmed(task, config, progress, now=now)
    return _poll(task, providers, progress)


def _poll(task: Task, providers: Callable[[str], Provider], progress: Progress) -> str:
    if task.status is TaskStatus.RECEIVED or task.provider.task_id is None:
        return "awaiting_submission"  # the uploads queue retries it with backoff
    update = providers(task.provider.name).status(task.provider.task_id, model=task.options.model)
    logger.info("provider status polled", extra={"provider_status": update.raw_status})
    if update.state is ProviderState.RUNNING and not may_move(task.status, TaskStatus.RUNNING):
        return "unchanged"  # no write: the lifecycle would refuse it anyway
    return apply_update(task.task_id, update, progress, via="reconcile", route=task.provider.name).value


def _resume(task: Task, resume: Callable[[str], None]) -> str:
    """A deferred task is listed only once due (its `open_since` is `deferred_until`): it
    goes back to the uploads queue. Sent again on every run until the submit step takes
    it; a resume that finds it taken, or not due, is acknowledged as a duplicate."""
    resume(task.task_id)
    return "resumed"


def _settle_unconfirmed(task: Task, config: ReconcileConfig, progress: Progress, *, now: float) -> str:
    """A submission that got no answer and whose webhook never came: failed, not resent
    (a second submission could be paid twice); uploading the image again submits it anew."""
    if task.provider.task_id is not None or now - task.updated_at < config.unconfirmed_hold_seconds:
        return "unconfirmed_held"
    error = ErrorInfo(
        code="PROVIDER_OUTCOME_UNKNOWN",
        message=(
            f"{task.provider.name} never answered the submission and sent no webhook within "
            f"{config.unconfirmed_hold_seconds} s; it was not submitted again, so it cannot be paid twice"
        ),
    )
    queued = begin_finalization(task.task_id, TaskStatus.FAILED, error, progress, via="reconcile")
    return "unconfirmed_failed" if queued else "unchanged"


def _renotify(task: Task, progress: Progress, endings: Endings) -> str:
    """A terminal task whose notification failed: publish it again."""
    if not endings.announce(task):
        return "notify_failed"
    progress.store.mark_notified(task.task_id)
    return "notified"


def _revive_finalization(
    task: Task, config: ReconcileConfig, progress: Progress, *, now: float, past_deadline: bool
) -> str:
    """A FINALIZING task whose order has not ended it for `finalize_stale_seconds`: its
    message was lost (a process died between the write and the enqueue, or the message
    went to the dead-letter queue). A new order takes it over; past the deadline, to time
    it out rather than try the download again."""
    if now - task.updated_at < config.finalize_stale_seconds or task.owner is None:
        return "finalize_pending"
    outcome = TaskStatus.TIMED_OUT if past_deadline else None
    handed = progress.store.hand_over(
        task.task_id, from_owner=task.owner, to_owner=new_finalize_id(), now=now, outcome=outcome
    )
    if handed is None:
        return "unchanged"
    if outcome is TaskStatus.TIMED_OUT and handed.error is None:
        error = ErrorInfo(code="TIMED_OUT", message=f"not finalized within {config.task_deadline_seconds} s")
        handed = handed.model_copy(update={"error": error})
    progress.enqueue(FinalizeOrder(task=handed))
    return "finalize_requeued"
