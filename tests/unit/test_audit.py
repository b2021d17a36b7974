"""The upload audit on moto (in-process): what it finds, what it repairs and what it
leaves alone, and how its watermark bounds each run's listing and table reads."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus, derive_task_id
from i2v.tasks.store import TaskStore
from i2v.usecases.audit import WATERMARK_KEY, AuditConfig, UploadAudit, upload_audit
from i2v.usecases.submit import uploads_in
from tests.support.aws import published
from tests.support.fakes import Clock, RecordingMetrics
from tests.unit.conftest import Aws

GRACE = 3600
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture
def queues(aws: Aws) -> dict[str, str]:
    return {
        "uploads": aws.sqs.create_queue(QueueName="uploads")["QueueUrl"],
        "dead_letters": aws.sqs.create_queue(QueueName="uploads-dlq")["QueueUrl"],
    }


@pytest.fixture
def later() -> Clock:
    """Two grace periods after now: every object put by a test is old enough to audit."""
    return Clock(time.time() + 2 * GRACE)


def make_audit(
    aws: Aws,
    queues: dict[str, str],
    clock: Clock,
    metrics: RecordingMetrics | None = None,
    **config: Any,
) -> UploadAudit:
    return upload_audit(
        config=AuditConfig(bucket=aws.bucket, grace_seconds=GRACE, **config),
        s3=aws.s3,
        dynamodb=aws.dynamodb,
        sqs=aws.sqs,
        sns=aws.sns,
        table=aws.table,
        uploads_queue_url=queues["uploads"],
        dead_letter_queue_url=queues["dead_letters"],
        topic_arn=aws.topic_arn,
        metrics=metrics,
        clock=clock,
    )


def sent(aws: Aws, queue_url: str) -> list[dict[str, Any]]:
    """The bodies waiting in a queue (drained)."""
    bodies = []
    while batch := aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            bodies.append(json.loads(message["Body"]))
            aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def put(aws: Aws, key: str, body: bytes = PNG) -> None:
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body)


def task_of(aws: Aws, key: str, *, task_id: str, received_at: float) -> Task:
    return Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=SourceObject(bucket=aws.bucket, key=key, size=len(PNG)),
        provider=ProviderRef(name="magnific"),
        owner="msg-1",
        received_at=received_at,
        updated_at=received_at,
    )


def succeeded(store: TaskStore, aws: Aws, key: str, *, task_id: str, result_expires_at: float) -> Task:
    """A task through the store's own writes to SUCCEEDED, with its video recorded."""
    now = time.time()
    store.create(task_of(aws, key, task_id=task_id, received_at=now), lease_until=now + 60)
    store.move(
        task_id,
        TaskStatus.FINALIZING,
        now=now,
        set_={"owner": "fin-1", "outcome": "SUCCEEDED", "result_expires_at": result_expires_at},
    )
    video = {"bucket": aws.bucket, "key": f"videos/{task_id}.mp4", "size": 3, "sha256": "0" * 64}
    written = store.end(task_id, TaskStatus.SUCCEEDED, owner="fin-1", now=now, set_={"video": video})
    assert written.task is not None
    return written.task


def count_calls(client: Any, operation: str) -> Counter[str]:
    """Counts `operation` calls made through `client` (botocore's event hooks)."""
    calls: Counter[str] = Counter()
    service = client.meta.service_model.service_name

    def hook(**kwargs: Any) -> None:
        calls[operation] += 1

    client.meta.events.register(f"before-call.{service}.{operation}", hook)
    return calls


# -- uploads that never became a task ------------------------------------------------------


def test_an_upload_without_a_task_is_sent_again_as_the_s3_event_submit_reads(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    # Given an image whose S3 event was lost, beside a sidecar and a "folder" key
    key = "incoming/Été à la plage+1.png"
    put(aws, key)
    put(aws, "incoming/cat.options.json", b"{}")
    put(aws, "incoming/folder/", b"")

    # When the audit runs
    report = make_audit(aws, queues, later)()

    # Then it found that one upload and sent the uploads queue an ObjectCreated message for it
    [lost] = report.uploads_without_task
    assert (lost.key, lost.repaired, lost.held_back) == (key, True, None)
    assert report.skipped["not_images"] == 2
    [message] = sent(aws, queues["uploads"])
    [upload] = list(uploads_in(message))
    # And the submit step reads it as that object, with the task id the report names
    assert (upload.bucket, upload.key, upload.size) == (aws.bucket, key, len(PNG))
    assert derive_task_id(upload.bucket, upload.key, upload.version) == lost.task_id


def test_two_audits_repairing_one_upload_name_the_same_task(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    # Given a lost upload, and two audits over the same window (the CLI's, twice)
    put(aws, "incoming/dog.png")
    first = make_audit(aws, queues, later)(since=0)
    second = make_audit(aws, queues, later)(since=0)

    # Then both sent an event for it, and both events make the same task id: the second
    # one's claim is refused, so it cannot be paid twice
    messages = sent(aws, queues["uploads"])
    ids = {derive_task_id(u.bucket, u.key, u.version) for m in messages for u in uploads_in(m)}
    assert len(messages) == 2
    assert ids == {first.uploads_without_task[0].task_id} == {second.uploads_without_task[0].task_id}


def test_an_upload_with_its_task_or_still_in_its_grace_period_is_not_flagged(
    aws: Aws, queues: dict[str, str], store: TaskStore
) -> None:
    # Given an upload whose task the submit step made, and one just uploaded
    now = time.time()
    put(aws, "incoming/has-task.png")
    store.create(task_of(aws, "incoming/has-task.png", task_id="t-1", received_at=now), lease_until=now)
    put(aws, "incoming/in-flight.png")

    # When the audit runs less than a grace period later, then after it
    soon = make_audit(aws, queues, Clock(now + 60))(since=0)
    after = make_audit(aws, queues, Clock(now + GRACE + 60))(since=0)

    # Then the young upload is left to its event at first, and only it is found afterwards
    assert soon.uploads_without_task == [] and soon.skipped["after_window"] == 2
    assert [lost.key for lost in after.uploads_without_task] == ["incoming/in-flight.png"]


def test_a_task_made_for_an_earlier_object_at_the_same_key_does_not_count(
    aws: Aws, queues: dict[str, str], store: TaskStore, later: Clock
) -> None:
    # Given a task received an hour before the object now at its key was written (the
    # bucket is not versioned: an upload over an old one is a new object)
    now = time.time()
    store.create(task_of(aws, "incoming/again.png", task_id="old", received_at=now - 3600), lease_until=now)
    put(aws, "incoming/again.png")

    # When the audit runs
    report = make_audit(aws, queues, later)()

    # Then the new object is an upload without a task
    assert [lost.key for lost in report.uploads_without_task] == ["incoming/again.png"]


def test_no_repair_while_the_dead_letter_queue_holds_uploads_and_the_pass_remembers_them(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    # Given a lost upload, and an upload notification in the dead-letter queue (it may be
    # this very upload: redriven after a repair, it would make a second task)
    put(aws, "incoming/held.png")
    aws.sqs.send_message(QueueUrl=queues["dead_letters"], MessageBody="{}")

    # When the scheduled audit runs
    held = make_audit(aws, queues, later)()

    # Then the upload is reported, held back with the reason, and nothing is sent
    [lost] = held.uploads_without_task
    assert not lost.repaired and "dead-letter" in (lost.held_back or "")
    assert sent(aws, queues["uploads"]) == []

    # When the dead-letter queue is cleared and the audit runs again (its pass is complete)
    sent(aws, queues["dead_letters"])
    again = make_audit(aws, queues, later)()

    # Then the upload it held back is repaired then
    assert [(lost.key, lost.repaired) for lost in again.uploads_without_task] == [("incoming/held.png", True)]
    assert len(sent(aws, queues["uploads"])) == 1


def test_without_repair_nothing_is_sent(aws: Aws, queues: dict[str, str], later: Clock) -> None:
    # Given a lost upload
    put(aws, "incoming/report-only.png")

    # When the audit runs without repairs
    report = make_audit(aws, queues, later)(since=0, repair=False)

    # Then it is reported, not repaired
    assert [(lost.key, lost.repaired) for lost in report.uploads_without_task] == [
        ("incoming/report-only.png", False)
    ]
    assert sent(aws, queues["uploads"]) == []


# -- succeeded tasks without their video ------------------------------------------------------


def test_a_succeeded_task_whose_video_is_gone_is_reported_and_nothing_is_queued(
    aws: Aws, queues: dict[str, str], store: TaskStore, later: Clock
) -> None:
    # Given two succeeded tasks, one with its video in the bucket and one whose video is gone
    for name in ("kept", "gone"):
        put(aws, f"incoming/{name}.png")
        succeeded(store, aws, f"incoming/{name}.png", task_id=name, result_expires_at=later() + 600)
    aws.s3.put_object(Bucket=aws.bucket, Key="videos/kept.mp4", Body=b"mp4")

    # When the audit runs
    report = make_audit(aws, queues, later)()

    # Then only the missing video is reported, with whether the provider still keeps it;
    # nothing is sent anywhere (a succeeded task cannot be finalized again)
    [missing] = report.tasks_without_video
    assert (missing.task_id, missing.video_key, missing.result_available) == ("gone", "videos/gone.mp4", True)
    assert report.uploads_without_task == []
    assert sent(aws, queues["uploads"]) == []
    assert report.to_dict()["repaired"]["tasks_without_video"] == 0


# -- terminal tasks without a notification ------------------------------------------------------


def test_a_pending_notification_is_published_again_once_and_its_mark_cleared(
    aws: Aws, queues: dict[str, str], store: TaskStore, later: Clock
) -> None:
    # Given a succeeded task whose notification failed more than a grace period ago
    task = succeeded(store, aws, "incoming/quiet.png", task_id="quiet", result_expires_at=0)
    store.reopen_for_notification(task.task_id, now=later() - GRACE - 60)
    published(aws.sqs, aws.tap_url)

    # When the audit runs twice
    first = make_audit(aws, queues, later)(since=later())
    second = make_audit(aws, queues, later)(since=later())

    # Then the first published its notification, and the second found nothing left
    assert [(u.task_id, u.status, u.repaired) for u in first.unnotified] == [("quiet", "SUCCEEDED", True)]
    [envelope] = published(aws.sqs, aws.tap_url)
    assert json.loads(envelope["Message"])["task_id"] == "quiet"
    assert second.unnotified == []
    stored = store.get("quiet")
    assert stored is not None and not stored.notify_pending


def test_a_pending_notification_is_only_reported_without_repair(
    aws: Aws, queues: dict[str, str], store: TaskStore, later: Clock
) -> None:
    task = succeeded(store, aws, "incoming/quiet.png", task_id="quiet", result_expires_at=0)
    store.reopen_for_notification(task.task_id, now=later() - GRACE - 60)
    published(aws.sqs, aws.tap_url)

    report = make_audit(aws, queues, later)(since=later(), repair=False)

    assert [(u.task_id, u.repaired) for u in report.unnotified] == [("quiet", False)]
    assert published(aws.sqs, aws.tap_url) == []
    stored = store.get("quiet")
    assert stored is not None and stored.notify_pending


# -- the watermark ---------------------------------------------------------------------------


def test_the_watermark_bounds_each_run_and_a_completed_pass_is_not_looked_up_again(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    # Given 25 lost uploads, more than a run's page budget holds (2 pages of 5 keys)
    for i in range(25):
        put(aws, f"incoming/lost-{i:02}.png")
    lists = count_calls(aws.s3, "ListObjectsV2")
    queries = count_calls(aws.dynamodb, "Query")
    metrics = RecordingMetrics()
    audit = make_audit(aws, queues, later, metrics, page_size=5, page_budget=2)

    # When the scheduled audit runs until its pass is complete
    runs = []
    while not (runs and runs[-1].complete):
        runs.append(audit())
        assert lists["ListObjectsV2"] <= 2 * len(runs)
        assert len(runs) <= 5

    # Then each run listed at most its budget, resuming where the last one stopped, and
    # every upload was found and repaired exactly once over the pass
    assert [run.pages for run in runs] == [2, 2, 1]
    assert [run.start_after for run in runs] == [None, "incoming/lost-09.png", "incoming/lost-19.png"]
    found = [lost.key for run in runs for lost in run.uploads_without_task]
    assert found == [f"incoming/lost-{i:02}.png" for i in range(25)]
    assert len(sent(aws, queues["uploads"])) == 25
    assert metrics.total("AuditUploadsWithoutTask") == 25
    assert [name for name, _ in metrics.recorded[:3]] == [
        "AuditUploadsWithoutTask",
        "AuditTasksWithoutVideo",
        "AuditUnnotified",
    ]

    # When the next pass runs over the same objects
    queries.clear()
    later.advance(60)
    next_pass = [audit() for _ in range(3)]

    # Then it lists them again within the same budget, but looks none up and repairs none
    assert all(run.uploads_without_task == [] for run in next_pass)
    assert sum(run.checked for run in next_pass) == 0
    assert sum(run.skipped["before_window"] for run in next_pass) == 25
    # (one open-tasks query per run, for pending notifications; no by-source lookup)
    assert queries["Query"] == 3
    assert sent(aws, queues["uploads"]) == []


def test_the_lookup_budget_stops_a_run_where_the_next_one_resumes(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    for i in range(7):
        put(aws, f"incoming/n-{i}.png")

    audit = make_audit(aws, queues, later, lookup_budget=3)
    runs = [audit() for _ in range(3)]

    assert [run.checked for run in runs] == [3, 3, 1]
    assert [run.complete for run in runs] == [False, False, True]
    assert [lost.key for run in runs for lost in run.uploads_without_task] == [
        f"incoming/n-{i}.png" for i in range(7)
    ]


def test_two_audits_at_once_cannot_both_advance_the_watermark(
    aws: Aws, queues: dict[str, str], later: Clock
) -> None:
    # Given the watermark as a run read it
    put(aws, "incoming/one.png")
    audit = make_audit(aws, queues, later)
    mark = audit.watermarks.read()

    # When another run advances it first
    assert audit().watermark == "advanced"

    # Then a write from the stale read is refused
    assert audit.watermarks.write(mark, now=later()) is False
    item = aws.dynamodb.get_item(TableName=aws.table, Key={"task_id": {"S": WATERMARK_KEY}})["Item"]
    assert item["revision"] == {"N": "1"}
    assert "open_shard" not in item and "source_uri" not in item


def test_objects_older_than_the_tables_retention_are_not_looked_up(aws: Aws, queues: dict[str, str]) -> None:
    # Given an upload older than the retention of the tasks (their items may be gone)
    put(aws, "incoming/ancient.png")
    long_after = Clock(time.time() + 10 * GRACE)

    # When the audit runs with a retention shorter than the object's age
    report = make_audit(aws, queues, long_after, max_age_seconds=5 * GRACE)()

    # Then it is not looked up, so never repaired into a second paid generation
    assert report.uploads_without_task == [] and report.checked == 0
    assert report.skipped["before_window"] == 1


def test_a_pass_holding_back_its_most_waits_where_it_is_until_the_dead_letters_are_cleared(
    aws: Aws, queues: dict[str, str], later: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four lost uploads, a dead-letter queue that is not empty, and room to remember two
    monkeypatch.setattr("i2v.usecases.audit.MAX_DEFERRED", 2)
    for i in range(4):
        put(aws, f"incoming/w-{i}.png")
    aws.sqs.send_message(QueueUrl=queues["dead_letters"], MessageBody="{}")
    audit = make_audit(aws, queues, later)

    # When the audit runs twice
    first, second = audit(), audit()

    # Then the pass stopped after the two it holds, and did not go further while they wait
    assert [lost.key for lost in first.uploads_without_task] == ["incoming/w-0.png", "incoming/w-1.png"]
    assert (first.resume_after, second.start_after, second.resume_after) == ("incoming/w-1.png",) * 3
    assert second.listed == 0 and not second.complete
    assert sent(aws, queues["uploads"]) == []

    # When the dead-letter queue is cleared
    sent(aws, queues["dead_letters"])
    third = audit()

    # Then the held ones and the rest are repaired, once each
    assert [(lost.key, lost.repaired) for lost in third.uploads_without_task] == [
        (f"incoming/w-{i}.png", True) for i in range(4)
    ]
    assert third.complete and len(sent(aws, queues["uploads"])) == 4
