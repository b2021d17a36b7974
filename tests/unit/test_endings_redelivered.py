"""A finalize order redelivered after its process died between SUCCEEDED and the
notification: found by the chaos run (the retry's download failed for good, the
SUCCEEDED was never announced). The first try's outcome is announced, whatever the
retry would have made of the task."""

from __future__ import annotations

from i2v.domain import Task, TaskStatus
from i2v.errors import DownloadFailed
from i2v.tasks.store import TaskStore
from i2v.usecases.finalize import FinalizeOutcome, Finalizer
from i2v.usecases.progress import FinalizeOrder
from tests.support.fakes import Clock, FakeVideoFetcher, Notifications
from tests.unit.test_progress import (
    VIDEO_URL,
    endings,
    finalizer,
    submitted,
)

__all__ = ["endings", "finalizer", "submitted"]  # fixtures shared with test_progress


def _succeeded_unannounced(store: TaskStore, submitted: Task, clock: Clock) -> FinalizeOrder:
    """The first try of order fin-1: FINALIZING, the video stored, SUCCEEDED written, and
    the process gone before it published."""
    finalizing = store.move(
        submitted.task_id, TaskStatus.FINALIZING, now=clock(), set_={"owner": "fin-1", "outcome": "SUCCEEDED"}
    ).task
    assert finalizing is not None
    assert store.end(submitted.task_id, TaskStatus.SUCCEEDED, owner="fin-1", now=clock()).applied
    return FinalizeOrder(task=finalizing, video_url=VIDEO_URL)


def test_a_retry_whose_download_fails_for_good_announces_the_first_tries_success(
    store: TaskStore,
    submitted: Task,
    clock: Clock,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    # Given the order's first try ended the task SUCCEEDED and died before publishing
    order = _succeeded_unannounced(store, submitted, clock)
    fetcher.errors.append(DownloadFailed("over the cap", permanent=True, code="VIDEO_TOO_LARGE"))

    # When the order comes back and its download now fails for good
    finalizer(order, attempt=1)

    # Then the task stays SUCCEEDED and that outcome is announced, once
    assert [(task.task_id, task.status) for task in notifications.sent] == [("t-1", TaskStatus.SUCCEEDED)]
    current = store.get("t-1")
    assert current is not None and current.status is TaskStatus.SUCCEEDED


def test_another_orders_refused_end_announces_nothing(
    store: TaskStore, submitted: Task, clock: Clock, finalizer: Finalizer, notifications: Notifications
) -> None:
    # Given the task was ended by order fin-1 / When a stale order fin-0 tries to end it
    order = _succeeded_unannounced(store, submitted, clock)
    stale = FinalizeOrder(task=order.task.model_copy(update={"owner": "fin-0"}), video_url=VIDEO_URL)

    # Then nothing is announced by it: fin-1's own retry is the one that will
    assert finalizer(stale, attempt=1) is FinalizeOutcome.NOT_OURS
    assert notifications.sent == []


def test_a_redelivered_order_whose_earlier_try_ended_the_task_downloads_nothing(
    store: TaskStore,
    submitted: Task,
    clock: Clock,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    # Given try 1 of order fin-1 ended the task FAILED (its download failed for good) and
    # died before publishing
    finalizing = store.move(
        submitted.task_id, TaskStatus.FINALIZING, now=clock(), set_={"owner": "fin-1", "outcome": "SUCCEEDED"}
    ).task
    assert finalizing is not None
    assert store.end(submitted.task_id, TaskStatus.FAILED, owner="fin-1", now=clock()).applied

    # When the order comes back (a second delivery), with a download that would succeed now
    outcome = finalizer(FinalizeOrder(task=finalizing, video_url=VIDEO_URL), attempt=2)

    # Then no video is fetched for the ended task, and its FAILED is announced
    assert outcome is FinalizeOutcome.FAILED
    assert fetcher.fetched == []
    assert [(task.task_id, task.status) for task in notifications.sent] == [("t-1", TaskStatus.FAILED)]
