"""TaskStore against moto's DynamoDB, with the template's key schema and indexes."""

from __future__ import annotations

from i2v.domain import ErrorInfo, ProviderRef, SourceObject, Task, TaskStatus, VideoObject
from i2v.tasks.store import TaskStore
from tests.support.fakes import Clock
from tests.unit.conftest import Aws


def new_task(task_id: str = "t-1", now: float = 1000.0) -> Task:
    return Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=SourceObject(bucket="media", key="incoming/cat.png", size=10),
        provider=ProviderRef(name="magnific"),
        received_at=now,
        updated_at=now,
    )


def test_create_claims_once(store: TaskStore) -> None:
    # Given a new task
    # When it is created twice (a duplicated S3 event)
    first = store.create(new_task(), lease_until=1100.0)
    second = store.create(new_task(), lease_until=1100.0)
    # Then only the first claim wins
    assert (first, second) == (True, False)
    stored = store.get("t-1")
    assert stored is not None and stored.status is TaskStatus.RECEIVED and stored.submit_attempts == 1


def test_released_submission_can_be_reclaimed_but_not_while_leased(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    # While the lease is live, nobody else claims it
    assert store.claim_submission("t-1", now=1050.0, lease_until=1170.0) is None
    # After a release (provider outage), the next delivery claims it
    store.release_submission("t-1", error=ErrorInfo(code="X", message="503"), now=1060.0)
    claimed = store.claim_submission("t-1", now=1070.0, lease_until=1190.0)
    assert claimed is not None
    assert claimed.submit_attempts == 2
    assert claimed.last_error == ErrorInfo(code="X", message="503")


def test_transitions_only_from_allowed_states(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    submitted = store.mark_submitted("t-1", provider_task_id="p-1", now=1010.0)
    assert submitted is not None and submitted.status is TaskStatus.SUBMITTED
    assert submitted.provider.task_id == "p-1" and submitted.lease_until is None
    running = store.transition("t-1", TaskStatus.RUNNING, allowed_from=[TaskStatus.SUBMITTED], now=1020.0)
    assert running is not None and running.running_at == 1020.0
    # A late IN_PROGRESS after RUNNING is refused: state never goes backwards
    again = store.transition("t-1", TaskStatus.RUNNING, allowed_from=[TaskStatus.SUBMITTED], now=1030.0)
    assert again is None
    assert (
        store.transition("missing", TaskStatus.RUNNING, allowed_from=[TaskStatus.SUBMITTED], now=1.0) is None
    )


def test_mark_submitted_after_a_fast_callback_keeps_the_later_state(store: TaskStore) -> None:
    # Given a provider that reported progress before we recorded its task id
    store.create(new_task(), lease_until=1100.0)
    store.transition("t-1", TaskStatus.RUNNING, allowed_from=[TaskStatus.RECEIVED], now=1005.0)
    # When the submission is recorded
    task = store.mark_submitted("t-1", provider_task_id="p-1", now=1006.0)
    # Then the id is kept and the state stays RUNNING
    assert task is not None and task.status is TaskStatus.RUNNING and task.provider.task_id == "p-1"


def test_finalization_lease_is_exclusive_until_it_expires(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    store.mark_submitted("t-1", provider_task_id="p-1", now=1010.0)
    first = store.claim_finalization("t-1", owner="a", now=2000.0, lease_seconds=60)
    assert first is not None and first.status is TaskStatus.FINALIZING and first.finalize_attempts == 1
    assert store.claim_finalization("t-1", owner="b", now=2030.0, lease_seconds=60) is None
    # The lease expires: another worker takes over, and the first can no longer complete
    second = store.claim_finalization("t-1", owner="b", now=2061.0, lease_seconds=60)
    assert second is not None and second.finalize_attempts == 2 and second.completed_at == 2000.0
    video = VideoObject(bucket="media", key="videos/x.mp4", size=1, sha256="00")
    assert store.complete("t-1", owner="a", video=video, now=2070.0) is None
    done = store.complete("t-1", owner="b", video=video, now=2071.0)
    assert done is not None and done.status is TaskStatus.SUCCEEDED and done.video == video
    assert done.lease_until is None and done.lease_owner is None


def test_terminal_tasks_stay_open_until_notified(store: TaskStore) -> None:
    clock = Clock(5000.0)
    store.create(new_task("t-1", now=1000.0), lease_until=1100.0)
    store.create(new_task("t-2", now=1000.0), lease_until=1100.0)
    store.transition("t-1", TaskStatus.REJECTED, allowed_from=[TaskStatus.RECEIVED], now=1001.0)
    # Both are found by the reconciler's query: one open, one terminal but not notified
    found = {t.task_id: t.status for t in store.list_open(older_than=clock())}
    assert found == {"t-1": TaskStatus.REJECTED, "t-2": TaskStatus.RECEIVED}
    # Once notified, the terminal task leaves the open index
    store.mark_notified("t-1", now=1002.0)
    assert [t.task_id for t in store.list_open(older_than=clock())] == ["t-2"]
    # And only tasks unchanged for long enough are listed
    assert list(store.list_open(older_than=999.0)) == []


def test_terminal_transition_sets_retention(store: TaskStore, aws: Aws) -> None:
    store.create(new_task(), lease_until=1100.0)
    store.transition("t-1", TaskStatus.REJECTED, allowed_from=[TaskStatus.RECEIVED], now=1001.0)
    item = aws.dynamodb.get_item(TableName=aws.table, Key={"task_id": {"S": "t-1"}})["Item"]
    assert int(item["expires_at"]["N"]) == 1001 + 30 * 86_400
    assert "lease_until" not in item
    assert item["source_uri"]["S"] == "s3://media/incoming/cat.png"
