"""Poll: a polling route's task asks its provider for news on a schedule of its own.

Routes without per-task webhooks (DashScope, APIYI, AI/ML API) learn completion by
asking. Each open task carries its next check as a delayed message on the poll queue
(docs/decisions.md, 25): the first near the route's expected generation time, then one
every `poll_interval_seconds`. No table scan, no read: the order names the route, the
provider's task id and the model. What a poll finds finished goes to the finalize queue
through `apply_update`, like a webhook's outcome; the reconciler stays the safety net for
a chain of polls that breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from i2v.domain import Frozen
from i2v.observability import logger
from i2v.providers.base import Provider, ProviderState
from i2v.providers.route import RouteSettings
from i2v.usecases.progress import Progress, apply_update

MAX_DELAY_SECONDS = 900  # SQS's longest message delay


class PollOrder(Frozen):
    """The poll queue's message: one status check of one task."""

    task_id: str
    route: str
    provider_task_id: str
    model: str | None = None
    submitted_at: float
    polls: int = 0
    running: bool = False
    """The task's RUNNING is recorded: later RUNNING answers write nothing."""


class PollOutcome(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"


SchedulePoll = Callable[[PollOrder, int], None]
"""(order, delay in seconds) -> the order is on the queue."""


@dataclass
class Pacer:
    """Spaces one process's status calls per route, so that `concurrency` pollers at once
    stay under each route's rate (`poll_rate_per_second` is per account)."""

    concurrency: int
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _last: dict[str, float] = field(default_factory=dict)

    def wait(self, route: str, rate_per_second: float) -> None:
        gap = self.concurrency / rate_per_second
        last = self._last.get(route)
        if last is not None:
            delay = last + gap - self.clock()
            if delay > 0:
                self.sleep(delay)
        self._last[route] = self.clock()


@dataclass(frozen=True)
class Poller:
    providers: Callable[[str], Provider]
    route_settings: Callable[[str], RouteSettings]
    progress: Progress
    schedule: SchedulePoll
    pacer: Pacer
    task_deadline_seconds: int

    def first(self, order: PollOrder) -> None:
        """Schedule a new task's first check, near the route's expected generation time."""
        self.schedule(order, min(MAX_DELAY_SECONDS, self.route_settings(order.route).first_poll_seconds))

    def __call__(self, order: PollOrder) -> PollOutcome:
        """Check once; schedule the next check while the task is open. Raises RetryLater
        (the provider is unavailable): the same order comes back after a backoff."""
        settings = self.route_settings(order.route)
        self.pacer.wait(order.route, settings.poll_rate_per_second)
        update = self.providers(order.route).status(order.provider_task_id, model=order.model)
        logger.info("provider status polled", extra={"provider_status": update.raw_status})
        if update.state is ProviderState.PENDING or (update.state is ProviderState.RUNNING and order.running):
            return self._again(order, settings, PollOutcome.PENDING)
        # A refused write is a task already there or further (a duplicate order, the
        # reconciler): RUNNING polls on, a finished answer ends this chain either way.
        apply_update(order.task_id, update, self.progress, via="poll", route=order.route)
        if update.state is ProviderState.RUNNING:
            return self._again(order.model_copy(update={"running": True}), settings, PollOutcome.RUNNING)
        return PollOutcome.FINISHED

    def _again(self, order: PollOrder, settings: RouteSettings, outcome: PollOutcome) -> PollOutcome:
        if self.progress.clock() - order.submitted_at > self.task_deadline_seconds:
            logger.info("past the task deadline: polls stop, the reconciler times it out")
            return PollOutcome.STOPPED
        self.schedule(order.model_copy(update={"polls": order.polls + 1}), settings.poll_interval_seconds)
        return outcome
