"""Reconcile: the safety net for missed webhooks, half-done finalizations, lost
notifications and tasks that never end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from i2v.domain import AWAITING_PROVIDER, ErrorInfo, Task, TaskStatus
from i2v.errors import PipelineError
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.providers.base import Provider
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import announce, finish
from i2v.usecases.progress import FetchVideo, FinalizeConfig, apply_update


@dataclass(frozen=True)
class ReconcileConfig:
    finalize: FinalizeConfig
    reconcile_after_seconds: int
    task_deadline_seconds: int
    max_tasks: int = 200


def reconcile(
    *,
    config: ReconcileConfig,
    store: TaskStore,
    provider: Provider,
    fetch_video: FetchVideo,
    notify: Callable[[Task], None],
    metrics: MetricsSink,
    clock: Callable[[], float],
    owner: str,
    time_left: Callable[[], float] = lambda: float("inf"),
) -> Counter[str]:
    """Visit open tasks unchanged for `reconcile_after_seconds`; returns what was done.

    Stops early when `time_left()` (seconds) runs low, so a run never dies half way
    through a download; the next run carries on.
    """
    report: Counter[str] = Counter()
    now = clock()
    for task in store.list_open(older_than=now - config.reconcile_after_seconds, limit=config.max_tasks):
        if time_left() < 60:
            report["stopped_early"] += 1
            break
        logger.set_correlation_id(task.task_id)
        try:
            report[_visit(task, config, store, provider, fetch_video, notify, metrics, clock, owner)] += 1
        except PipelineError as exc:
            logger.warning("task not reconciled this time", extra={"code": exc.code, "reason": exc.message})
            report["errors"] += 1
    logger.set_correlation_id(None)
    return report


def _visit(
    task: Task,
    config: ReconcileConfig,
    store: TaskStore,
    provider: Provider,
    fetch_video: FetchVideo,
    notify: Callable[[Task], None],
    metrics: MetricsSink,
    clock: Callable[[], float],
    owner: str,
) -> str:
    now = clock()
    if task.status.is_terminal:
        return "notified" if announce(task, store=store, notify=notify, now=now) else "notify_failed"

    lease_held = task.status is TaskStatus.FINALIZING and (task.lease_until or 0) > now
    if lease_held:
        return "lease_held"
    if now - task.received_at > config.task_deadline_seconds:
        ended = finish(
            task.task_id,
            TaskStatus.TIMED_OUT,
            [task.status],
            store=store,
            notify=notify,
            now=now,
            error=ErrorInfo(
                code="TIMED_OUT",
                message=(
                    f"no result within {config.task_deadline_seconds} s (last state {task.status.value})"
                ),
            ),
        )
        if ended:
            metrics.add_metric(name="TasksTimedOut", unit=MetricUnit.Count, value=1)
        return "timed_out" if ended else "unchanged"
    if task.status is TaskStatus.RECEIVED or task.provider.task_id is None:
        return "awaiting_submission"  # the uploads queue retries it with backoff

    assert task.status in AWAITING_PROVIDER or task.status is TaskStatus.FINALIZING
    update = provider.status(task.provider.task_id)
    logger.info("provider status polled", extra={"provider_status": update.raw_status})
    outcome = apply_update(
        task,
        update,
        config=config.finalize,
        store=store,
        fetch_video=fetch_video,
        notify=notify,
        metrics=metrics,
        clock=clock,
        owner=owner,
    )
    return outcome.value
