"""TaskStore against moto's DynamoDB, with the template's key schema and indexes."""

from __future__ import annotations

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus, VideoObject
from i2v.tasks.store import TaskStore
from tests.unit.conftest import Aws

TOKEN_HASH = "a" * 64


def new_task(task_id: str = "t-1", now: float = 1000.0, owner: str = "msg-1") -> Task:
    return Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=SourceObject(bucket="media", key="incoming/cat.png", size=10),
        provider=ProviderRef(name="magnific"),
        token_hash=TOKEN_HASH,
        owner=owner,
        received_at=now,
        updated_at=now,
    )


def finalizing(store: TaskStore, owner: str = "fin-1") -> Task:
    store.create(new_task(), lease_until=1100.0)
    store.mark_submitted("t-1", provider_task_id="p-1", now=1001.0)
    written = store.move(
        "t-1", TaskStatus.FINALIZING, now=1002.0, set_={"owner": owner, "outcome": "SUCCEEDED"}
    )
    assert written.task is not None
    return written.task


def test_create_claims_once_and_a_refusal_shows_the_claimant(store: TaskStore) -> None:
    # Given a new task
    # When it is created twice (a duplicated S3 event)
    first = store.create(new_task(), lease_until=1100.0)
    second = store.create(new_task(owner="msg-2"), lease_until=1100.0)
    # Then only the first claim wins, and the refusal names who holds it, without a read
    assert first.applied and not second.applied
    assert second.before is not None and second.before.owner == "msg-1"
    stored = store.get("t-1")
    assert stored is not None and stored.status is TaskStatus.RECEIVED and stored.submit_attempts == 1
    assert stored.token_hash == TOKEN_HASH


def test_released_submission_can_be_reclaimed_with_a_new_token_but_not_while_leased(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    # While the lease is live, nobody else claims it
    assert (
        store.claim_submission(
            "t-1", owner="msg-2", token_hash="b" * 64, now=1050.0, lease_until=1170.0, route="magnific"
        )
        is None
    )
    # After a release (provider outage), the next delivery claims it with its own token
    store.release_submission("t-1", owner="msg-1", error={"code": "X", "message": "503"}, now=1060.0)
    released = store.get("t-1")
    assert released is not None and released.released
    claimed = store.claim_submission(
        "t-1",
        owner="msg-2",
        token_hash="b" * 64,
        now=1070.0,
        lease_until=1190.0,
        route="fal",
        estimated_cost_usd=1.4,
    )
    assert claimed is not None
    assert (claimed.submit_attempts, claimed.owner, claimed.token_hash) == (2, "msg-2", "b" * 64)
    assert claimed.last_error is not None and claimed.last_error.message == "503"
    # And the retry is on the route it names now, no longer marked released
    assert (claimed.provider.name, claimed.estimated_cost_usd, claimed.released) == ("fal", 1.4, False)


def test_an_unanswered_submission_is_held_and_a_webhook_may_still_move_it_on(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    held = store.hold_unconfirmed(
        "t-1", error={"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "timeout"}, now=1010.0
    )
    assert held is not None and held.status is TaskStatus.UNCONFIRMED and held.lease_until is None
    # Nothing claims it for another submission
    assert (
        store.claim_submission(
            "t-1", owner="msg-2", token_hash="b" * 64, now=1200.0, lease_until=1300.0, route="magnific"
        )
        is None
    )
    # The provider's webhook says it did take it: its id is recorded on the way
    running = store.move("t-1", TaskStatus.RUNNING, now=1020.0, provider_task_id="p-9")
    assert running.task is not None and running.task.provider.task_id == "p-9"


def test_moves_follow_the_lifecycle_table(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    assert store.move("t-1", TaskStatus.RUNNING, now=1001.0).applied
    # RUNNING -> RUNNING is not a move: the refusal returns the task as it is
    again = store.move("t-1", TaskStatus.RUNNING, now=1002.0)
    assert not again.applied and again.before is not None and again.before.status is TaskStatus.RUNNING
    assert store.move("t-1", TaskStatus.FINALIZING, now=1003.0).applied
    assert not store.move("t-1", TaskStatus.FINALIZING, now=1004.0).applied
    task = store.get("t-1")
    assert task is not None and (task.running_at, task.completed_at) == (1001.0, 1003.0)


def test_a_move_with_a_token_applies_only_to_the_task_of_that_token(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    refused = store.move("t-1", TaskStatus.RUNNING, now=1001.0, token_hash="f" * 64)
    assert not refused.applied and refused.before is not None
    assert store.get("t-1") == refused.before  # nothing changed
    assert store.move("t-1", TaskStatus.RUNNING, now=1001.0, token_hash=TOKEN_HASH).applied


def test_a_move_for_another_provider_task_is_refused(store: TaskStore) -> None:
    store.create(new_task(), lease_until=1100.0)
    store.mark_submitted("t-1", provider_task_id="p-1", now=1001.0)
    assert not store.move("t-1", TaskStatus.RUNNING, now=1002.0, provider_task_id="p-2").applied
    assert store.move("t-1", TaskStatus.RUNNING, now=1002.0, provider_task_id="p-1").applied


def test_a_fast_callback_records_the_provider_id_and_mark_submitted_keeps_the_later_state(
    store: TaskStore,
) -> None:
    store.create(new_task(), lease_until=1100.0)
    assert store.move("t-1", TaskStatus.RUNNING, now=1001.0, provider_task_id="p-1").applied
    task = store.mark_submitted("t-1", provider_task_id="p-1", now=1002.0)
    assert task is not None and task.status is TaskStatus.RUNNING
    assert task.provider.task_id == "p-1" and task.submitted_at == 1002.0 and task.lease_until is None


def test_only_the_owner_ends_a_task_and_the_end_leaves_the_open_index(store: TaskStore, aws: Aws) -> None:
    finalizing(store)
    video = VideoObject(bucket="media", key="videos/cat/t-1.mp4", size=1, sha256="0" * 64)
    fields = {"video": video.model_dump(mode="json")}
    stranger = store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-2", now=1010.0, set_=fields)
    assert not stranger.applied
    mine = store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-1", now=1010.0, set_=fields)
    assert mine.task is not None and mine.task.video == video and mine.task.outcome is None
    # The same order's retry is refused, and the refusal shows it ended the task itself
    retry = store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-1", now=1011.0, set_=fields)
    assert not retry.applied and retry.before is not None
    assert (retry.before.status, retry.before.owner) == (TaskStatus.SUCCEEDED, "fin-1")
    assert list(store.list_open(older_than=2000.0)) == []
    item = aws.dynamodb.get_item(TableName=aws.table, Key={"task_id": {"S": "t-1"}})["Item"]
    assert int(item["expires_at"]["N"]) == 1010 + 30 * 86_400
    assert "open_shard" not in item


def test_a_hand_over_takes_the_task_from_its_old_order(store: TaskStore) -> None:
    finalizing(store)
    handed = store.hand_over(
        "t-1", from_owner="fin-1", to_owner="fin-2", now=1500.0, outcome=TaskStatus.TIMED_OUT
    )
    assert handed is not None and handed.owner == "fin-2" and handed.outcome is TaskStatus.TIMED_OUT
    assert store.hand_over("t-1", from_owner="fin-1", to_owner="fin-3", now=1501.0) is None
    assert not store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-1", now=1502.0).applied
    assert store.end("t-1", TaskStatus.TIMED_OUT, owner="fin-2", now=1502.0).applied


def test_a_failed_notification_puts_the_task_back_for_the_reconciler(store: TaskStore) -> None:
    finalizing(store)
    store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-1", now=1010.0)
    reopened = store.reopen_for_notification("t-1", now=1011.0)
    assert reopened is not None and reopened.notify_pending
    assert [t.task_id for t in store.list_open(older_than=2000.0)] == ["t-1"]
    assert store.mark_notified("t-1") is not None
    assert list(store.list_open(older_than=2000.0)) == []
    assert store.mark_notified("t-1") is None  # nothing pending any more


def test_open_tasks_are_listed_by_age_from_the_sparse_index(store: TaskStore) -> None:
    for i in range(3):
        store.create(new_task(f"t-{i}", now=1000.0 + i), lease_until=2000.0)
    assert [t.task_id for t in store.list_open(older_than=1001.5)] == ["t-0", "t-1"]
    assert [t.task_id for t in store.list_open(older_than=5000.0, limit=2)] == ["t-0", "t-1"]


def test_each_attempt_rides_on_the_write_that_records_its_answer(store: TaskStore) -> None:
    from i2v.attempts import Attempt, AttemptOutcome, with_end

    # Given an outage, then a retry that a fast webhook beats to the table
    store.create(new_task(), lease_until=1100.0)
    outage = Attempt(route="magnific", started_at=1001.0, ended_at=1002.0, outcome=AttemptOutcome.UNAVAILABLE)
    store.release_submission(
        "t-1", owner="msg-1", error={"code": "X", "message": "503"}, now=1002.0, attempt=outage
    )
    store.claim_submission(
        "t-1", owner="msg-2", token_hash="b" * 64, now=1010.0, lease_until=1100.0, route="magnific"
    )
    assert store.move("t-1", TaskStatus.RUNNING, now=1012.0, provider_task_id="p-1").applied
    accepted = Attempt(
        route="magnific",
        provider_task_id="p-1",
        started_at=1011.0,
        outcome=AttemptOutcome.ACCEPTED,
        estimated_charge_usd=1.5,
    )
    # When the submit step records the accepted attempt (its SUBMITTED write is refused and repeated)
    stored = store.mark_submitted("t-1", provider_task_id="p-1", now=1013.0, attempt=accepted)
    # Then both attempts are on the task, in order, the accepted one once
    assert stored is not None and stored.attempts == [outage, accepted]
    # And when the task ends, the accepted attempt ends with it
    store.move("t-1", TaskStatus.FINALIZING, now=1020.0, set_={"owner": "fin-1", "outcome": "FAILED"})
    ended = store.end(
        "t-1", TaskStatus.FAILED, owner="fin-1", now=1030.0, set_={"error": {"code": "E", "message": "m"}}
    )
    assert ended.task is not None
    assert [(a.outcome, a.ended_at) for a in with_end(ended.task)] == [
        (AttemptOutcome.UNAVAILABLE, 1002.0),
        (AttemptOutcome.FAILED, 1030.0),
    ]


def test_a_deferred_task_waits_off_the_index_until_due_and_is_resumed_once(store: TaskStore) -> None:
    # Given a claimed task the day's budget cannot take
    store.create(new_task(), lease_until=1100.0)
    # Another message cannot defer it
    assert not store.defer(
        "t-1", owner="msg-2", until=90_000.0, now=1001.0, error={"code": "B", "message": "m"}
    ).applied
    deferred = store.defer(
        "t-1", owner="msg-1", until=90_000.0, now=1001.0, error={"code": "B", "message": "m"}
    )
    assert deferred.task is not None and deferred.task.status is TaskStatus.DEFERRED
    assert deferred.task.lease_until is None
    # It is on the open-tasks index at the time it is due, so a run before then does not list it
    assert [t.task_id for t in store.list_open(older_than=89_999.0)] == []
    assert [t.task_id for t in store.list_open(older_than=90_001.0)] == ["t-1"]
    # Nothing else claims it, and it cannot be resumed early
    assert (
        store.claim_submission(
            "t-1", owner="msg-3", token_hash="c" * 64, now=2000.0, lease_until=2100.0, route="magnific"
        )
        is None
    )
    assert not store.resume_deferred(
        "t-1", owner="r-1", token_hash="c" * 64, now=89_000.0, lease_until=89_180.0
    ).applied
    # When due, one resume takes it back to RECEIVED; a second is refused
    resumed = store.resume_deferred(
        "t-1", owner="r-1", token_hash="c" * 64, now=90_100.0, lease_until=90_280.0
    )
    assert resumed.task is not None
    assert (
        resumed.task.status,
        resumed.task.owner,
        resumed.task.resumed_at,
        resumed.task.deferred_until,
    ) == (
        TaskStatus.RECEIVED,
        "r-1",
        90_100.0,
        None,
    )
    again = store.resume_deferred("t-1", owner="r-2", token_hash="d" * 64, now=90_101.0, lease_until=90_281.0)
    assert not again.applied and again.before is not None and again.before.owner == "r-1"
