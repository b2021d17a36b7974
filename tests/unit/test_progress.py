"""After submission: callbacks and polls record the provider's word, the finalize queue's
orders store the video and end the task, and the reconciler catches what was missed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.errors import BadCallback, DownloadFailed, ProviderUnavailable, RetryLater, Unauthorized
from i2v.providers import UnknownRoute
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token
from i2v.usecases.callback import CallbackRequest, receive_callback
from i2v.usecases.finalize import FinalizeConfig, FinalizeOutcome, Finalizer, video_key
from i2v.usecases.outcome import Endings
from i2v.usecases.progress import FinalizeOrder, Progress, UpdateOutcome
from i2v.usecases.reconcile import ReconcileConfig, reconcile
from tests.support.fakes import Clock, FakeProvider, FakeVideoFetcher, Notifications, RecordingMetrics

FINALIZE = FinalizeConfig(
    bucket="media", incoming_prefix="incoming/", videos_prefix="videos/", max_attempts=3
)
RECONCILE = ReconcileConfig(
    reconcile_after_seconds=300, task_deadline_seconds=3600, finalize_stale_seconds=900
)
TOKEN = "secret-token"
VIDEO_URL = "https://cdn.example/v.mp4"


@dataclass
class FinalizeQueue:
    """The finalize queue, in memory: orders with their delivery counts."""

    orders: list[tuple[FinalizeOrder, int]] = field(default_factory=list)

    def __call__(self, order: FinalizeOrder) -> None:
        self.orders.append((order, 1))

    def drain(self, finalizer: Finalizer, *, passes: int = 10) -> list[FinalizeOutcome | str]:
        """Run every order, as the queue's consumer would; a RetryLater comes back."""
        seen: list[FinalizeOutcome | str] = []
        for _ in range(passes):
            if not self.orders:
                break
            waiting, self.orders = self.orders, []
            for order, attempt in waiting:
                try:
                    seen.append(finalizer(order, attempt=attempt))
                except RetryLater:
                    seen.append("retry")
                    self.orders.append((order, attempt + 1))
        return seen


@pytest.fixture
def queue() -> FinalizeQueue:
    return FinalizeQueue()


@pytest.fixture
def progress(store: TaskStore, queue: FinalizeQueue, clock: Clock) -> Progress:
    return Progress(store=store, enqueue=queue, clock=clock)


@pytest.fixture
def endings(
    store: TaskStore, notifications: Notifications, metrics: RecordingMetrics, clock: Clock
) -> Endings:
    return Endings(store=store, notify=notifications, metrics=metrics, clock=clock)


@pytest.fixture
def finalizer(
    provider: FakeProvider,
    fetcher: FakeVideoFetcher,
    endings: Endings,
    metrics: RecordingMetrics,
    clock: Clock,
) -> Finalizer:
    return Finalizer(
        config=FINALIZE,
        providers={provider.name: provider}.__getitem__,
        fetch_video=fetcher,
        stored_video=fetcher.stored,
        endings=endings,
        metrics=metrics,
        clock=clock,
    )


@pytest.fixture
def submitted(store: TaskStore, clock: Clock) -> Task:
    """A task the provider accepted, as the submit step leaves it."""
    task = Task(
        task_id="t-1",
        status=TaskStatus.RECEIVED,
        received_at=clock(),
        updated_at=clock(),
        source=SourceObject(bucket="media", key="incoming/trip/beach.png", size=10),
        provider=ProviderRef(name="magnific"),
        token_hash=hash_token(TOKEN),
        owner="upload-msg",
        estimated_cost_usd=1.5,
    )
    assert store.create(task, lease_until=clock() + 60).applied
    clock.advance(1)
    done = store.mark_submitted("t-1", provider_task_id="p-1", now=clock())
    assert done is not None
    return done


def update(
    state: ProviderState, url: str | None = VIDEO_URL, provider_task_id: str = "p-1"
) -> ProviderUpdate:
    return ProviderUpdate(
        provider_task_id=provider_task_id, state=state, raw_status=state.value, video_url=url
    )


def routes_of(*providers: FakeProvider) -> Callable[[str], FakeProvider]:
    known = {p.name: p for p in providers}

    def provider_of(name: str) -> FakeProvider:
        from i2v.providers import UnknownRoute

        if name not in known:
            raise UnknownRoute(f"unknown provider route {name!r}")
        return known[name]

    return provider_of


@pytest.fixture
def call(provider: FakeProvider, progress: Progress) -> Callable[..., UpdateOutcome]:
    def callback(
        body: ProviderUpdate, token: str = TOKEN, task_id: str = "t-1", route: str = "magnific"
    ) -> UpdateOutcome:
        request = CallbackRequest(
            route=route, task_id=task_id, token=token, headers={}, body=body.model_dump_json().encode()
        )
        return receive_callback(request, providers=routes_of(provider), progress=progress)

    return callback


def test_progress_then_completion_queues_one_order_that_stores_the_video_and_notifies_once(
    call: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
    metrics: RecordingMetrics,
    clock: Clock,
) -> None:
    assert call(update(ProviderState.RUNNING)) is UpdateOutcome.RUNNING
    clock.advance(30)
    # The webhook is answered before any download: it only records and queues
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.FINALIZING
    assert fetcher.fetched == [] and len(queue.orders) == 1
    # A duplicate COMPLETED and a late IN_PROGRESS change nothing and queue nothing
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.UNCHANGED
    assert call(update(ProviderState.RUNNING)) is UpdateOutcome.UNCHANGED
    assert len(queue.orders) == 1
    # The order carries what the download needs: nothing is read before it
    [(order, _)] = queue.orders
    assert order.video_url == VIDEO_URL and order.task.source.key == "incoming/trip/beach.png"
    assert queue.drain(finalizer) == [FinalizeOutcome.SUCCEEDED]
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED and task.completed_via == "callback"
    assert task.video is not None and task.video.key == "videos/trip/beach/t-1.mp4"
    assert fetcher.fetched == [(VIDEO_URL, "videos/trip/beach/t-1.mp4")]
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]
    assert notifications.sent[0].video == task.video
    assert metrics.total("TasksSucceeded") == 1 and metrics.total("BytesDownloaded") == 1234
    assert metrics.total("GenerationSeconds") == pytest.approx(30)


@pytest.mark.parametrize("token", ["wrong", ""])
@pytest.mark.parametrize("state", [ProviderState.RUNNING, ProviderState.SUCCEEDED, ProviderState.PENDING])
def test_a_wrong_token_is_unauthorized_and_changes_nothing(
    call: Any, submitted: Task, store: TaskStore, queue: FinalizeQueue, token: str, state: ProviderState
) -> None:
    with pytest.raises(Unauthorized):
        call(update(state), token=token)
    assert store.get("t-1") == submitted and queue.orders == []


def test_another_tasks_token_is_unauthorized(
    call: Any, submitted: Task, store: TaskStore, clock: Clock
) -> None:
    other = submitted.model_copy(update={"task_id": "t-2", "token_hash": hash_token("other-token")})
    assert store.create(other, lease_until=clock() + 60).applied
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED), token="other-token", task_id="t-1")
    assert store.get("t-1") == submitted


def test_an_unknown_task_is_unauthorized(call: Any, submitted: Task) -> None:
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED), task_id="t-404")


def test_a_bad_signature_is_unauthorized_and_changes_nothing(
    call: Any, submitted: Task, store: TaskStore, provider: FakeProvider, queue: FinalizeQueue
) -> None:
    provider.callbacks_valid = False
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED))
    assert store.get("t-1") == submitted and queue.orders == []


def test_a_webhook_for_another_provider_task_is_refused(
    call: Any, submitted: Task, store: TaskStore, queue: FinalizeQueue
) -> None:
    with pytest.raises(BadCallback):
        call(update(ProviderState.SUCCEEDED, provider_task_id="p-2"))
    assert store.get("t-1") == submitted and queue.orders == []


def test_a_pending_webhook_with_the_right_token_changes_nothing(
    call: Any, submitted: Task, store: TaskStore
) -> None:
    assert call(update(ProviderState.PENDING)) is UpdateOutcome.UNCHANGED
    assert store.get("t-1") == submitted


def test_a_callback_before_the_provider_id_is_recorded_records_it(
    call: Any, store: TaskStore, clock: Clock, submitted: Task
) -> None:
    fast = submitted.model_copy(
        update={"task_id": "t-fast", "status": TaskStatus.RECEIVED, "provider": ProviderRef(name="magnific")}
    )
    assert store.create(fast, lease_until=clock() + 60).applied
    assert (
        call(update(ProviderState.RUNNING, provider_task_id="p-9"), task_id="t-fast") is UpdateOutcome.RUNNING
    )
    task = store.get("t-fast")
    assert task is not None and task.provider.task_id == "p-9" and task.status is TaskStatus.RUNNING


def test_provider_failure_ends_the_task_with_a_notification(
    call: Any, submitted: Task, queue: FinalizeQueue, finalizer: Finalizer, notifications: Notifications
) -> None:
    assert call(update(ProviderState.FAILED)) is UpdateOutcome.FINALIZING
    assert queue.drain(finalizer) == [FinalizeOutcome.FAILED]
    [task] = notifications.sent
    assert (
        task.status is TaskStatus.FAILED and task.error is not None and task.error.code == "PROVIDER_FAILED"
    )


def test_a_transient_download_failure_is_retried_with_a_fresh_url(
    call: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    fetcher.errors.append(DownloadFailed("connection reset", permanent=False))
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED, url="https://cdn.example/fresh.mp4")
    call(update(ProviderState.SUCCEEDED))
    assert queue.drain(finalizer) == ["retry", FinalizeOutcome.SUCCEEDED]
    # The retry asked the provider for its current URL (a signed one may have expired)
    assert fetcher.fetched == [("https://cdn.example/fresh.mp4", "videos/trip/beach/t-1.mp4")]
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]


def test_a_permanent_download_failure_fails_the_task(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    fetcher.errors.append(DownloadFailed("host not allowed", permanent=True, code="VIDEO_HOST_NOT_ALLOWED"))
    call(update(ProviderState.SUCCEEDED))
    assert queue.drain(finalizer) == [FinalizeOutcome.FAILED]
    assert notifications.sent[0].error is not None
    assert notifications.sent[0].error.code == "VIDEO_HOST_NOT_ALLOWED"


def test_a_redelivery_that_cannot_download_succeeds_with_the_video_an_earlier_try_stored(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    # Given an order whose first try stored the video whole, then died before SUCCEEDED
    call(update(ProviderState.SUCCEEDED))
    [(order, _)] = queue.orders
    fetcher(
        VIDEO_URL,
        "videos/trip/beach/t-1.mp4",
        {"task-id": "t-1", "source-key": "incoming/trip/beach.png"},
        "magnific",
    )
    # When its redelivery's download fails for good (the answer now claims 3 GiB)
    fetcher.errors.append(DownloadFailed("over the cap", permanent=True, code="VIDEO_TOO_LARGE"))
    outcome = finalizer(order, attempt=2)
    # Then the task succeeds with the stored video, announced once, instead of failing
    assert outcome is FinalizeOutcome.SUCCEEDED
    [sent] = notifications.sent
    assert sent.status is TaskStatus.SUCCEEDED
    assert sent.video is not None
    assert (sent.video.key, sent.video.sha256) == ("videos/trip/beach/t-1.mp4", "ab" * 32)


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_download_failing_for_good_fails_the_task_when_no_earlier_try_stored_its_video(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
    attempt: int,
) -> None:
    # Given an object at the video's key stored for another task (a first try never looks)
    call(update(ProviderState.SUCCEEDED))
    [(order, _)] = queue.orders
    fetcher(VIDEO_URL, "videos/trip/beach/t-1.mp4", {"task-id": "t-other", "source-key": "x"}, "magnific")
    fetcher.errors.append(DownloadFailed("over the cap", permanent=True, code="VIDEO_TOO_LARGE"))
    # When the download fails for good, Then the task FAILS with the download's reason
    assert finalizer(order, attempt=attempt) is FinalizeOutcome.FAILED
    [sent] = notifications.sent
    assert sent.error is not None and sent.error.code == "VIDEO_TOO_LARGE"


def test_repeated_transient_failures_end_after_max_attempts(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
) -> None:
    fetcher.errors.extend(DownloadFailed("503", permanent=False) for _ in range(3))
    call(update(ProviderState.SUCCEEDED))
    assert queue.drain(finalizer) == ["retry", "retry", FinalizeOutcome.FAILED]
    assert [t.status for t in notifications.sent] == [TaskStatus.FAILED]


@pytest.mark.parametrize("url", [None, ""])
def test_a_completion_without_a_video_is_acknowledged_and_resolved_through_the_status_endpoint(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    fetcher: FakeVideoFetcher,
    url: str | None,
) -> None:
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED, url="https://cdn.example/late.mp4")
    assert call(update(ProviderState.SUCCEEDED, url=url)) is UpdateOutcome.FINALIZING
    assert queue.drain(finalizer) == [FinalizeOutcome.SUCCEEDED]
    assert fetcher.fetched == [("https://cdn.example/late.mp4", "videos/trip/beach/t-1.mp4")]


def test_a_completion_that_never_names_a_video_fails_after_bounded_retries(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    notifications: Notifications,
) -> None:
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED, url=None)
    assert call(update(ProviderState.SUCCEEDED, url=None)) is UpdateOutcome.FINALIZING
    assert queue.drain(finalizer) == ["retry", "retry", FinalizeOutcome.FAILED]
    [task] = notifications.sent
    assert (
        task.status is TaskStatus.FAILED and task.error is not None and task.error.code == "VIDEO_URL_MISSING"
    )


def test_an_order_retried_after_its_process_died_announces_the_end_it_wrote(
    call: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    notifications: Notifications,
) -> None:
    # Given an order whose terminal write landed but whose notification did not go out
    call(update(ProviderState.SUCCEEDED))
    [(order, _)] = queue.orders
    assert order.task.owner is not None
    store.end("t-1", TaskStatus.SUCCEEDED, owner=order.task.owner, now=2.0e9)
    # When the message comes back
    assert finalizer(order, attempt=2) is FinalizeOutcome.SUCCEEDED
    # Then the notification goes out
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]


def test_an_order_that_lost_its_task_to_a_new_one_ends_nothing(
    call: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    notifications: Notifications,
    clock: Clock,
) -> None:
    call(update(ProviderState.SUCCEEDED))
    [(order, _)] = queue.orders
    assert order.task.owner is not None
    store.hand_over("t-1", from_owner=order.task.owner, to_owner="finalize-new", now=clock())
    assert finalizer(order, attempt=1) is FinalizeOutcome.NOT_OURS
    assert notifications.sent == []


def test_a_failed_notification_is_left_to_the_reconciler(
    call: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    sweep: Any,
    notifications: Notifications,
    clock: Clock,
) -> None:
    notifications.fail_next = 1
    call(update(ProviderState.FAILED))
    assert queue.drain(finalizer) == [FinalizeOutcome.FAILED]
    assert notifications.sent == []
    clock.advance(301)
    assert sweep() == {"notified": 1}
    assert [t.status for t in notifications.sent] == [TaskStatus.FAILED]
    task = store.get("t-1")
    assert task is not None and not task.notify_pending
    clock.advance(301)
    assert sweep() == {}


def test_video_key_keeps_the_source_path_and_the_task_id(submitted: Task) -> None:
    assert video_key(submitted, FINALIZE) == "videos/trip/beach/t-1.mp4"


# -- reconcile ----------------------------------------------------------------------------


@pytest.fixture
def sweep(provider: FakeProvider, progress: Progress, endings: Endings) -> Any:
    def run() -> dict[str, int]:
        routes = {provider.name: provider, "other-route": FakeProvider(name="other-route")}

        def route(name: str) -> FakeProvider:
            if name not in routes:
                raise UnknownRoute(f"unknown provider route {name!r}")
            return routes[name]

        return dict(reconcile(config=RECONCILE, providers=route, progress=progress, endings=endings))

    return run


def test_a_missed_webhook_is_found_by_polling_and_finished_on_the_queue(
    sweep: Any,
    submitted: Task,
    store: TaskStore,
    provider: FakeProvider,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    clock: Clock,
    notifications: Notifications,
) -> None:
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED)
    # Too recent: left alone
    assert sweep() == {}
    clock.advance(301)
    assert sweep() == {"finalizing": 1}
    assert queue.drain(finalizer) == [FinalizeOutcome.SUCCEEDED]
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED and task.completed_via == "reconcile"
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]
    # The task left the open index: the next sweep sees nothing
    clock.advance(301)
    assert sweep() == {}


def test_a_task_past_its_deadline_times_out_with_a_notification(
    sweep: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    clock: Clock,
    notifications: Notifications,
) -> None:
    clock.advance(3601)
    assert sweep() == {"timed_out": 1}
    assert queue.drain(finalizer) == [FinalizeOutcome.TIMED_OUT]
    [task] = notifications.sent
    assert task.status is TaskStatus.TIMED_OUT and task.error is not None and task.error.code == "TIMED_OUT"


def test_a_timed_out_task_is_cancelled_at_the_provider_and_the_cancel_recorded(
    sweep: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    clock: Clock,
    metrics: RecordingMetrics,
) -> None:
    clock.advance(3601)
    sweep()
    assert queue.drain(finalizer) == [FinalizeOutcome.TIMED_OUT]
    assert provider.cancelled == ["p-1"]
    task = store.get("t-1")
    assert task is not None and task.cancelled_at == clock()
    assert metrics.total("ProviderTasksCancelled") == 1


def test_a_cancel_the_route_refuses_still_times_the_task_out(
    sweep: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    clock: Clock,
) -> None:
    def unavailable(provider_task_id: str, *, model: str | None = None) -> bool:
        raise ProviderUnavailable("503")

    provider.cancel = unavailable  # type: ignore[method-assign]
    clock.advance(3601)
    sweep()
    assert queue.drain(finalizer) == [FinalizeOutcome.TIMED_OUT]
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.TIMED_OUT and task.cancelled_at is None


def test_a_video_found_after_its_result_expired_fails_with_that_reason(
    call: Any,
    submitted: Task,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    fetcher: FakeVideoFetcher,
    clock: Clock,
    notifications: Notifications,
) -> None:
    # Given a completion whose order waited past the route's result lifetime (24 h here)
    call(update(ProviderState.SUCCEEDED))
    [(order, _)] = queue.orders
    assert order.task.result_expires_at == pytest.approx(clock() + 24 * 3600)
    clock.advance(24 * 3600 + 1)

    # Then nothing is fetched and the task fails with the reason
    assert queue.drain(finalizer) == [FinalizeOutcome.FAILED]
    assert fetcher.fetched == []
    [task] = notifications.sent
    assert task.error is not None and task.error.code == "RESULT_EXPIRED"


def unconfirmed(store: TaskStore, clock: Clock, task_id: str) -> None:
    """A task whose submission was sent and never answered."""
    task = Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        received_at=clock(),
        updated_at=clock(),
        source=SourceObject(bucket="media", key=f"incoming/{task_id}.png", size=10),
        provider=ProviderRef(name="magnific"),
        token_hash=hash_token(TOKEN),
        owner="upload-msg",
    )
    assert store.create(task, lease_until=clock() + 60).applied
    error = {"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "ReadTimeout"}
    assert store.hold_unconfirmed(task_id, error=error, now=clock()) is not None


def test_an_unconfirmed_submission_is_held_then_failed_never_resubmitted(
    sweep: Any,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    clock: Clock,
    notifications: Notifications,
) -> None:
    # Given a submission that got no answer
    unconfirmed(store, clock, "t-2")

    # While its webhook may still come, the reconciler waits (nothing to poll: no id)
    clock.advance(1000)
    assert sweep() == {"unconfirmed_held": 1}
    # After the hold it fails, with the reason, and nothing was submitted again
    clock.advance(900)
    assert sweep() == {"unconfirmed_failed": 1}
    assert queue.drain(finalizer) == [FinalizeOutcome.FAILED]
    assert provider.submitted == []
    [ended] = notifications.sent
    assert ended.error is not None and ended.error.code == "PROVIDER_OUTCOME_UNKNOWN"


def test_an_unconfirmed_submission_whose_webhook_comes_finishes_normally(
    call: Any,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    clock: Clock,
) -> None:
    unconfirmed(store, clock, "t-3")

    assert (
        call(update(ProviderState.SUCCEEDED, provider_task_id="p-7"), task_id="t-3")
        is UpdateOutcome.FINALIZING
    )
    assert queue.drain(finalizer) == [FinalizeOutcome.SUCCEEDED]
    done = store.get("t-3")
    assert done is not None and done.status is TaskStatus.SUCCEEDED and done.provider.task_id == "p-7"


def test_a_lost_finalize_order_is_reissued_once_stale(
    call: Any,
    sweep: Any,
    submitted: Task,
    store: TaskStore,
    queue: FinalizeQueue,
    finalizer: Finalizer,
    provider: FakeProvider,
    clock: Clock,
) -> None:
    # Given a completion whose order was lost (the process died before the enqueue)
    call(update(ProviderState.SUCCEEDED))
    queue.orders.clear()
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED)
    # Not yet stale: an order may still be waiting in the queue
    clock.advance(301)
    assert sweep() == {"finalize_pending": 1}
    clock.advance(900)
    assert sweep() == {"finalize_requeued": 1}
    assert queue.drain(finalizer) == [FinalizeOutcome.SUCCEEDED]
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED


def test_a_provider_outage_while_polling_leaves_the_task_for_the_next_run(
    sweep: Any, submitted: Task, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    def down(_: str, *, model: str | None = None) -> ProviderUpdate:
        raise ProviderUnavailable("503")

    provider.status = down  # type: ignore[method-assign]
    clock.advance(301)
    assert sweep() == {"errors": 1}
    assert store.get("t-1") == submitted


def test_a_poll_that_brings_nothing_new_writes_nothing(
    sweep: Any, submitted: Task, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a submitted task the provider reports running
    provider.statuses["p-1"] = update(ProviderState.RUNNING)
    clock.advance(301)
    # When the reconciler polls it twice
    assert sweep() == {"running": 1}
    moved = store.get("t-1")
    clock.advance(301)
    # Then the second poll, which learns nothing, leaves the item as it was
    assert sweep() == {"unchanged": 1}
    assert store.get("t-1") == moved


def test_each_task_is_polled_through_the_route_recorded_on_it(
    sweep: Any, submitted: Task, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a task accepted by another route than the fake's (the primary changed since)
    other = submitted.model_copy(
        update={"task_id": "t-2", "provider": ProviderRef(name="other-route", task_id="o-1")}
    )
    assert store.create(other, lease_until=clock() + 60).applied
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED)
    clock.advance(301)
    # When the reconciler polls: each task is asked of its own route
    report = sweep()
    # Then t-1's route found it finished, and the other route was asked about o-1 (running)
    assert report == {"finalizing": 1, "running": 1}
    moved = store.get("t-2")
    assert moved is not None and moved.status is TaskStatus.RUNNING


def test_a_task_of_an_unknown_route_is_reported_and_the_others_go_on(
    sweep: Any, submitted: Task, store: TaskStore, clock: Clock
) -> None:
    # Given a task of a route this deployment no longer has, beside an ordinary one
    stray = submitted.model_copy(
        update={"task_id": "t-3", "provider": ProviderRef(name="gone", task_id="g-1")}
    )
    assert store.create(stray, lease_until=clock() + 60).applied
    clock.advance(301)
    # When the reconciler runs, the stray task is an error of this run and the other is polled
    assert sweep() == {"errors": 1, "running": 1}
