"""Reconcile: the safety net for missed webhooks, half-done finalizations, lost
notifications and tasks that never end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from i2v.domain import AWAITING_PROVIDER, ErrorInfo, Task, TaskStatus
from i2v.errors import PipelineError
from i2v.observability import logger
from i2v.providers.base import Provider
from i2v.usecases.outcome import announce
from i2v.usecases.progress import Progress, apply_update

# A run stops starting work this close to its Lambda timeout; the next run carries on.
_RESERVE_SECONDS = 60


@dataclass(frozen=True)
class ReconcileConfig:
    reconcile_after_seconds: int
    task_deadline_seconds: int
    max_tasks: int = 200


def reconcile(
    *,
    config: ReconcileConfig,
    provider: Provider,
    progress: Progress,
    time_left: Callable[[], float] = lambda: float("inf"),
) -> Counter[str]:
    """Visit open tasks unchanged for `reconcile_after_seconds`; returns what was done."""
    report: Counter[str] = Counter()
    older_than = progress.clock() - config.reconcile_after_seconds
    for task in progress.store.list_open(older_than=older_than, limit=config.max_tasks):
        if time_left() < _RESERVE_SECONDS:
            report["stopped_early"] += 1
            break
        logger.set_correlation_id(task.task_id)
        try:
            report[_visit(task, config, provider, progress)] += 1
        except PipelineError as exc:
            logger.warning("task not reconciled this time", extra={"code": exc.code, "reason": exc.message})
            report["errors"] += 1
    logger.set_correlation_id(None)
    return report


def _visit(task: Task, config: ReconcileConfig, provider: Provider, progress: Progress) -> str:
    now = progress.clock()
    if task.status.is_terminal:
        sent = announce(task, store=progress.store, notify=progress.notify, now=now)
        return "notified" if sent else "notify_failed"
    if task.status is TaskStatus.FINALIZING and (task.lease_until or 0) > now:
        return "lease_held"
    if now - task.received_at > config.task_deadline_seconds:
        error = ErrorInfo(
            code="TIMED_OUT",
            message=f"no result within {config.task_deadline_seconds} s (last state {task.status.value})",
        )
        ended = progress.end(task.task_id, TaskStatus.TIMED_OUT, [task.status], error)
        return "timed_out" if ended else "unchanged"
    if task.status is TaskStatus.RECEIVED or task.provider.task_id is None:
        return "awaiting_submission"  # the uploads queue retries it with backoff

    assert task.status in AWAITING_PROVIDER or task.status is TaskStatus.FINALIZING
    update = provider.status(task.provider.task_id)
    logger.info("provider status polled", extra={"provider_status": update.raw_status})
    return apply_update(task, update, progress).value
