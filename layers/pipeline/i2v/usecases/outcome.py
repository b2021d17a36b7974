"""Ending a task, the one way: a terminal write, its notification, its metric."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from i2v.domain import ErrorInfo, Task, TaskStatus
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.tasks.store import TaskStore

if TYPE_CHECKING:
    from i2v.attempts import Attempt

OUTCOME_METRICS = {
    TaskStatus.SUCCEEDED: "TasksSucceeded",
    TaskStatus.FAILED: "TasksFailed",
    TaskStatus.REJECTED: "TasksRejected",
    TaskStatus.TIMED_OUT: "TasksTimedOut",
}


@dataclass(frozen=True)
class Endings:
    """Ends tasks for the submit step and the finalizer, the only two that do.

    Both work from a queue message: if the process dies between the terminal write and
    the publish, the message comes back, its write is refused by a task that it ended
    itself (same owner), and the notification of that first outcome goes out then, even
    when the retry would have ended it otherwise (a video download that fails this time). A publish that
    fails puts the task back on the reconciler's index instead. Delivery is therefore
    at least once; consumers deduplicate on the message's `event_id`.
    """

    store: TaskStore
    notify: Callable[[Task], None]
    metrics: MetricsSink
    clock: Callable[[], float]

    def end(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        owner: str,
        error: ErrorInfo | None = None,
        set_: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
    ) -> Task | None:
        """Move the task to a terminal `status` and announce it; None if it was not ours to end.
        `attempt` is the provider attempt that ended it at submission (a refusal)."""
        fields = dict(set_ or {})
        if error is not None:
            fields["error"] = error.model_dump()
        written = self.store.end(task_id, status, owner=owner, now=self.clock(), set_=fields, attempt=attempt)
        if written.task is not None:
            ended = written.task
            self.metrics.add_metric(name=OUTCOME_METRICS[status], unit=MetricUnit.Count, value=1)
        elif (
            written.before is not None and written.before.status.is_terminal and written.before.owner == owner
        ):
            ended = written.before
            logger.info(
                "the task was ended by an earlier try of this message; announcing it again",
                extra={"status": ended.status.value},
            )
        else:
            current = written.before.status.value if written.before else None
            logger.info("task not ended here", extra={"to": status.value, "current": current})
            return None
        self.announce(ended)
        return ended

    def announce(self, task: Task) -> bool:
        """Publish a terminal task's notification; if that fails, the reconciler retries it."""
        try:
            self.notify(task)
        except Exception:
            logger.exception("notification not published; the reconciler will retry it")
            self.store.reopen_for_notification(task.task_id, now=self.clock())
            return False
        # The dashboard counts outcomes per route from this line (template.yaml, Dashboard).
        logger.info("outcome notified", extra={"status": task.status.value, "route": task.provider.name})
        return True

    def announce_deferral(self, task: Task) -> None:
        """Publish that a task waits for the next day's budget. A failed publish is logged
        only: the task still comes back by itself, and its outcome is announced then."""
        try:
            self.notify(task)
        except Exception:
            logger.exception("deferral not published; the task still comes back when the budget resets")
            return
        logger.info("deferral notified")
