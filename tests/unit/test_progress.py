"""Callback and reconcile use cases: the task lifecycle after submission."""

from __future__ import annotations

from typing import Any

import pytest

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.errors import BadCallback, DownloadFailed, ProviderUnavailable, Unauthorized
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token
from i2v.usecases.callback import CallbackRequest, apply_callback, authenticate
from i2v.usecases.progress import FinalizeConfig, Progress, UpdateOutcome, video_key
from i2v.usecases.reconcile import ReconcileConfig, reconcile
from tests.support.fakes import Clock, FakeProvider, FakeVideoFetcher, Notifications, RecordingMetrics

FINALIZE = FinalizeConfig(
    bucket="media", incoming_prefix="incoming/", videos_prefix="videos/", lease_seconds=600, max_attempts=3
)
TOKEN = "secret-token"


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
    )
    store.create(task, lease_until=clock() + 60)
    store.prepare_submission(
        "t-1",
        source=task.source,
        options=task.options,
        token_hash=hash_token(TOKEN),
        estimated_cost_usd=1.5,
        now=clock(),
    )
    clock.advance(1)
    done = store.mark_submitted("t-1", provider_task_id="p-1", now=clock())
    assert done is not None
    return done


def update(state: ProviderState, url: str | None = "https://cdn.example/v.mp4") -> ProviderUpdate:
    return ProviderUpdate(provider_task_id="p-1", state=state, raw_status=state.value, video_url=url)


@pytest.fixture
def progress(
    store: TaskStore,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
    metrics: RecordingMetrics,
    clock: Clock,
) -> Progress:
    return Progress(FINALIZE, store, fetcher, notifications, metrics, clock, owner="req-1")


@pytest.fixture
def call(store: TaskStore, provider: FakeProvider, progress: Progress) -> Any:
    def callback(body: ProviderUpdate, token: str = TOKEN, task_id: str = "t-1") -> UpdateOutcome:
        request = CallbackRequest(
            task_id=task_id, token=token, headers={}, body=body.model_dump_json().encode()
        )
        task = authenticate(request, store)
        return apply_callback(task, request, provider=provider, progress=progress)

    return callback


def test_progress_then_completion_stores_the_video_once_and_notifies_once(
    call: Any,
    submitted: Task,
    store: TaskStore,
    fetcher: FakeVideoFetcher,
    notifications: Notifications,
    metrics: RecordingMetrics,
    clock: Clock,
) -> None:
    assert call(update(ProviderState.RUNNING)) is UpdateOutcome.RUNNING
    clock.advance(30)
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.SUCCEEDED
    # A duplicate COMPLETED and a late IN_PROGRESS change nothing
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.UNCHANGED
    assert call(update(ProviderState.RUNNING)) is UpdateOutcome.UNCHANGED
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED
    assert task.video is not None and task.video.key == "videos/trip/beach/t-1.mp4"
    assert fetcher.fetched == [("https://cdn.example/v.mp4", "videos/trip/beach/t-1.mp4")]
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]
    assert metrics.total("TasksSucceeded") == 1 and metrics.total("BytesDownloaded") == 1234
    assert metrics.total("GenerationSeconds") == pytest.approx(30)


@pytest.mark.parametrize("token", ["wrong", ""])
def test_a_wrong_token_is_unauthorized_and_changes_nothing(
    call: Any, submitted: Task, store: TaskStore, token: str
) -> None:
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED), token=token)
    assert store.get("t-1") == submitted


def test_an_unknown_task_is_unauthorized(call: Any, submitted: Task) -> None:
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED), task_id="t-404")


def test_a_bad_signature_is_unauthorized_and_changes_nothing(
    call: Any, submitted: Task, store: TaskStore, provider: FakeProvider
) -> None:
    provider.callbacks_valid = False
    with pytest.raises(Unauthorized):
        call(update(ProviderState.SUCCEEDED))
    assert store.get("t-1") == submitted


def test_a_webhook_for_another_provider_task_is_refused(call: Any, submitted: Task, store: TaskStore) -> None:
    other = ProviderUpdate(provider_task_id="p-2", state=ProviderState.SUCCEEDED, raw_status="COMPLETED")
    with pytest.raises(BadCallback):
        call(other)
    assert store.get("t-1") == submitted


def test_provider_failure_ends_the_task_with_a_notification(
    call: Any, submitted: Task, notifications: Notifications
) -> None:
    assert call(update(ProviderState.FAILED)) is UpdateOutcome.FAILED
    [task] = notifications.sent
    assert task.status is TaskStatus.FAILED and task.error is not None


def test_a_transient_download_failure_leaves_the_task_recoverable(
    call: Any, submitted: Task, store: TaskStore, fetcher: FakeVideoFetcher, notifications: Notifications
) -> None:
    fetcher.errors.append(DownloadFailed("connection reset", permanent=False))
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.RETRY_LATER
    held = store.get("t-1")
    assert held is not None and held.status is TaskStatus.FINALIZING and held.last_error is not None
    assert notifications.sent == []
    # The retried webhook (or the reconciler) can take over at once
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.SUCCEEDED


def test_a_permanent_download_failure_fails_the_task(
    call: Any, submitted: Task, fetcher: FakeVideoFetcher, notifications: Notifications
) -> None:
    fetcher.errors.append(DownloadFailed("host not allowed", permanent=True, code="VIDEO_HOST_NOT_ALLOWED"))
    assert call(update(ProviderState.SUCCEEDED)) is UpdateOutcome.FAILED
    assert notifications.sent[0].error is not None
    assert notifications.sent[0].error.code == "VIDEO_HOST_NOT_ALLOWED"


def test_repeated_transient_failures_end_after_max_attempts(
    call: Any, submitted: Task, fetcher: FakeVideoFetcher, notifications: Notifications
) -> None:
    fetcher.errors.extend(DownloadFailed("503", permanent=False) for _ in range(3))
    outcomes = [call(update(ProviderState.SUCCEEDED)) for _ in range(3)]
    assert outcomes == [UpdateOutcome.RETRY_LATER, UpdateOutcome.RETRY_LATER, UpdateOutcome.FAILED]
    assert [t.status for t in notifications.sent] == [TaskStatus.FAILED]


def test_video_key_keeps_the_source_path_and_the_task_id(submitted: Task) -> None:
    assert video_key(submitted, FINALIZE) == "videos/trip/beach/t-1.mp4"


# -- reconcile ----------------------------------------------------------------------------

RECONCILE = ReconcileConfig(reconcile_after_seconds=300, task_deadline_seconds=3600)


@pytest.fixture
def sweep(provider: FakeProvider, progress: Progress) -> Any:
    def run() -> dict[str, int]:
        return dict(reconcile(config=RECONCILE, provider=provider, progress=progress))

    return run


def test_a_missed_webhook_is_finished_by_polling(
    sweep: Any,
    submitted: Task,
    store: TaskStore,
    provider: FakeProvider,
    clock: Clock,
    notifications: Notifications,
) -> None:
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED)
    # Too recent: left alone
    assert sweep() == {}
    clock.advance(301)
    assert sweep() == {"succeeded": 1}
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED
    assert [t.status for t in notifications.sent] == [TaskStatus.SUCCEEDED]
    # The task left the open index: the next sweep sees nothing
    clock.advance(301)
    assert sweep() == {}


def test_a_task_past_its_deadline_times_out_with_a_notification(
    sweep: Any, submitted: Task, clock: Clock, notifications: Notifications
) -> None:
    clock.advance(3601)
    assert sweep() == {"timed_out": 1}
    [task] = notifications.sent
    assert task.status is TaskStatus.TIMED_OUT and task.error is not None and task.error.code == "TIMED_OUT"


def test_an_expired_finalization_lease_is_reclaimed(
    sweep: Any, submitted: Task, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a finalizer that died holding its lease
    store.claim_finalization("t-1", owner="dead", now=clock(), lease_seconds=600)
    provider.statuses["p-1"] = update(ProviderState.SUCCEEDED)
    clock.advance(301)
    assert sweep() == {"lease_held": 1}
    clock.advance(300)
    assert sweep() == {"succeeded": 1}
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUCCEEDED and task.finalize_attempts == 2


def test_a_lost_notification_is_published_again(
    call: Any, sweep: Any, submitted: Task, store: TaskStore, notifications: Notifications, clock: Clock
) -> None:
    notifications.fail_next = 1
    assert call(update(ProviderState.FAILED)) is UpdateOutcome.FAILED
    assert notifications.sent == []
    clock.advance(301)
    assert sweep() == {"notified": 1}
    assert [t.status for t in notifications.sent] == [TaskStatus.FAILED]
    task = store.get("t-1")
    assert task is not None and task.notified_at is not None


def test_a_provider_outage_while_polling_leaves_the_task_for_the_next_run(
    sweep: Any, submitted: Task, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    def down(_: str) -> ProviderUpdate:
        raise ProviderUnavailable("503")

    provider.status = down  # type: ignore[method-assign]
    clock.advance(301)
    assert sweep() == {"errors": 1}
    assert store.get("t-1") == submitted
