"""Ending a task: one conditional transition, then its one notification."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from i2v.domain import ErrorInfo, Task, TaskStatus
from i2v.observability import logger
from i2v.tasks.store import TaskStore


def finish(
    task_id: str,
    status: TaskStatus,
    allowed_from: Iterable[TaskStatus],
    *,
    store: TaskStore,
    notify: Callable[[Task], None],
    now: float,
    error: ErrorInfo | None = None,
    set_: dict[str, Any] | None = None,
) -> Task | None:
    """Move the task to a terminal `status` and announce it; None if it was not allowed."""
    fields = dict(set_ or {})
    if error is not None:
        fields["error"] = error.model_dump()
    task = store.transition(task_id, status, allowed_from=allowed_from, now=now, set_=fields)
    if task is None:
        logger.info("transition not allowed from the current state", extra={"to": status.value})
        return None
    announce(task, store=store, notify=notify, now=now)
    return task


def announce(task: Task, *, store: TaskStore, notify: Callable[[Task], None], now: float) -> bool:
    """Publish a terminal task's notification; a failure is left for the reconciler to retry."""
    try:
        notify(task)
    except Exception:
        logger.exception("notification not published; the reconciler will retry it")
        return False
    store.mark_notified(task.task_id, now=now)
    logger.info("outcome notified", extra={"status": task.status.value})
    return True
