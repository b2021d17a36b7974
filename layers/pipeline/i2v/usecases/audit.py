"""The upload audit: nothing slips through unseen.

Compares the images under the incoming prefix with the task table and finds
- uploads that never became a task (a lost S3 event), repaired by sending the uploads
  queue an S3-shaped ObjectCreated message, so the normal submit path takes them;
- SUCCEEDED tasks whose video object is missing, reported only: a SUCCEEDED task cannot
  be finalized again (the lifecycle has no way back), and a finalize order for it is
  refused by the finalizer;
- terminal tasks whose notification is still pending, repaired by publishing it again
  through the ending path (its `event_id` is stable, so consumers deduplicate).

S3 lists keys in lexical order, not by time, so a scheduled run never lists the whole
bucket: a pass walks the prefix with a cursor, at most `page_budget` pages per run, and
looks up in the table only the objects modified inside the pass's window (after the
last completed pass's end, before this pass's start less the grace period). The cursor
and the window live in one reserved item of the task table (`WATERMARK_KEY`), written
with an optimistic lock so two audits at once cannot both advance it
(docs/decisions.md, 45-47).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from i2v.domain import Task, TaskStatus, derive_task_id
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.options import is_sidecar
from i2v.storage import video_key_of
from i2v.tasks.store import OPEN_INDEX, OPEN_SHARD, TaskStore

WATERMARK_KEY = "audit#uploads"
"""The audit's item in the task table: no task id has a '#', and it carries neither
index's keys, so no query of the reconciler or of operators meets it."""
SOURCE_INDEX = "by-source"
# A run stops listing this close to its Lambda timeout; the next run carries on.
_RESERVE_SECONDS = 30
# Most uploads held back (found while the uploads dead-letter queue is not empty) that the
# watermark item remembers; a pass that would hold more waits where it is.
MAX_DEFERRED = 200

METRICS = {
    "uploads_without_task": "AuditUploadsWithoutTask",
    "tasks_without_video": "AuditTasksWithoutVideo",
    "unnotified": "AuditUnnotified",
}


@dataclass(frozen=True)
class AuditConfig:
    bucket: str
    incoming_prefix: str = "incoming/"
    videos_prefix: str = "videos/"
    grace_seconds: float = 3600
    """Uploads younger than this are left to their S3 event: above the longest an event may
    wait in the uploads queue, retries included, before it makes a task."""
    max_age_seconds: float = 90 * 86_400
    """Objects older than this are never looked up: their tasks may have left the table (TTL)."""
    page_budget: int = 50
    """ListObjectsV2 pages (of `page_size` keys) one run may read."""
    page_size: int = 1000
    lookup_budget: int = 2000
    """Table lookups (one by-source query per object in the window) one run may make."""
    clock_slack_seconds: float = 60
    """How far a task's `received_at` may precede its object's LastModified (clock skew)."""
    unnotified_limit: int = 100


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str
    last_modified: float

    def upload_event(self, bucket: str) -> dict[str, Any]:
        """An S3 ObjectCreated notification for this object, as the bucket would send it.

        The bucket is not versioned, so a task's id comes from the event's sequencer. The
        one here is derived from the object (its ETag and LastModified): audits repairing
        the same object give the same task id, whose claim is taken once.
        """
        event_time = datetime.fromtimestamp(self.last_modified, UTC).isoformat(timespec="milliseconds")
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": event_time.replace("+00:00", "Z"),
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "i2v-audit"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "i2v-audit-repair",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {
                            "key": quote_plus(self.key, safe="/"),
                            "size": self.size,
                            "eTag": self.etag,
                            "sequencer": self.sequencer,
                        },
                    },
                }
            ]
        }

    @property
    def sequencer(self) -> str:
        return f"i2v-audit:{self.etag}:{self.last_modified!r}"

    def task_id(self, bucket: str) -> str:
        """The id of the task the repair's event makes (i2v/usecases/submit.py, Upload.version)."""
        return derive_task_id(bucket, self.key, self.sequencer)


@dataclass(frozen=True)
class LostUpload:
    key: str
    size: int
    last_modified: float
    task_id: str
    """The task the repair makes (or made): the same for every audit that repairs it."""
    repaired: bool
    held_back: str | None = None
    """Why it was not repaired, when repairs were asked for."""


@dataclass(frozen=True)
class MissingVideo:
    task_id: str
    source_key: str
    video_key: str
    result_expires_at: float | None
    result_available: bool
    """Whether the provider still keeps the video (its result has not expired)."""


@dataclass(frozen=True)
class UnnotifiedTask:
    task_id: str
    status: str
    pending_since: float | None
    repaired: bool


@dataclass
class AuditReport:
    """What one audit run found and did."""

    window_since: float
    window_until: float
    repair: bool
    start_after: str | None = None
    """Where this run's listing began (exclusive)."""
    resume_after: str | None = None
    """Where the pass goes on (exclusive); None when the pass is complete."""
    complete: bool = False
    pages: int = 0
    listed: int = 0
    checked: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    uploads_without_task: list[LostUpload] = field(default_factory=list)
    tasks_without_video: list[MissingVideo] = field(default_factory=list)
    unnotified: list[UnnotifiedTask] = field(default_factory=list)
    watermark: str = "not used"
    """For a scheduled pass: "advanced", "not advanced (another audit moved it)"."""
    dead_letters: int | None = None
    """Messages in the uploads dead-letter queue, read once per run at the first lost upload."""

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in METRICS}

    @property
    def repaired(self) -> dict[str, int]:
        return {
            "uploads_without_task": sum(item.repaired for item in self.uploads_without_task),
            "tasks_without_video": 0,
            "unnotified": sum(item.repaired for item in self.unnotified),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {"since": self.window_since, "until": self.window_until},
            "repair": self.repair,
            "start_after": self.start_after,
            "resume_after": self.resume_after,
            "complete": self.complete,
            "pages": self.pages,
            "listed": self.listed,
            "checked": self.checked,
            "skipped": dict(self.skipped),
            "counts": self.counts,
            "repaired": self.repaired,
            "uploads_without_task": [asdict(item) for item in self.uploads_without_task],
            "tasks_without_video": [asdict(item) for item in self.tasks_without_video],
            "unnotified": [asdict(item) for item in self.unnotified],
            "watermark": self.watermark,
            "dead_letters": self.dead_letters,
        }


# -- the watermark ------------------------------------------------------------------------


@dataclass(frozen=True)
class Watermark:
    """Where the scheduled passes are: one item of the task table."""

    since: float | None = None
    """The end of the window of the last completed pass: objects older are checked."""
    pass_since: float | None = None
    pass_until: float | None = None
    """The window of the pass in progress (None: the next run starts a pass)."""
    cursor: str | None = None
    """The last key the pass in progress has looked at."""
    deferred: tuple[ListedObject, ...] = ()
    """Uploads without a task held back while the uploads dead-letter queue was not empty."""
    passes: int = 0
    revision: int = 0


class WatermarkStore:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    def read(self) -> Watermark:
        item = self._db.get_item(
            TableName=self._table, Key={"task_id": {"S": WATERMARK_KEY}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return Watermark()
        state = json.loads(item["state"]["S"])
        state["deferred"] = tuple(ListedObject(**entry) for entry in state.get("deferred", ()))
        return Watermark(**state, revision=int(item["revision"]["N"]))

    def write(self, watermark: Watermark, *, now: float) -> bool:
        """Store `watermark` if no other audit wrote since it was read; False if one did."""
        state = asdict(replace(watermark, revision=0))
        del state["revision"]
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "task_id": {"S": WATERMARK_KEY},
                    "state": {"S": json.dumps(state)},
                    "revision": {"N": str(watermark.revision + 1)},
                    "updated_at": {"N": repr(now)},
                },
                ConditionExpression="attribute_not_exists(task_id) OR revision = :read",
                ExpressionAttributeValues={":read": {"N": str(watermark.revision)}},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True


# -- the table reads ------------------------------------------------------------------------


class AuditReads:
    """The two queries the audit makes: an object's tasks (by-source) and the terminal
    tasks whose notification is pending (the sparse open-tasks index)."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer

        self._db = dynamodb_client
        self._table = table_name
        self._deserializer = TypeDeserializer()
        # The store's item mapping (Decimal to int or float), not a second copy of it.
        self._store = TaskStore(dynamodb_client, table_name)

    def tasks_of(self, bucket: str, key: str, *, received_after: float) -> list[Task]:
        """The tasks of the upload at `key` received after `received_after`."""
        items = self._db.query(
            TableName=self._table,
            IndexName=SOURCE_INDEX,
            KeyConditionExpression="source_uri = :uri AND received_at >= :after",
            ExpressionAttributeValues={
                ":uri": {"S": f"s3://{bucket}/{key}"},
                ":after": {"N": repr(received_after)},
            },
        ).get("Items", [])
        return [self._store._task(item) for item in items]

    def pending_notifications(self, *, older_than: float, limit: int) -> Iterator[Task]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "open_shard = :shard AND open_since < :before",
            "FilterExpression": "notify_pending = :true",
            "ExpressionAttributeValues": {
                ":shard": {"S": OPEN_SHARD},
                ":before": {"N": repr(older_than)},
                ":true": {"BOOL": True},
            },
        }
        returned = 0
        while True:
            page = self._db.query(**kwargs)
            for item in page.get("Items", []):
                task = self._store._task(item)
                if task.status.is_terminal:
                    yield task
                    returned += 1
                    if returned >= limit:
                        return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- the audit ------------------------------------------------------------------------------


Renotify = Callable[[Task], bool]
"""Publish a terminal task's notification again and clear its pending mark; False if it failed."""
EnqueueUpload = Callable[[dict[str, Any]], None]
"""Send the uploads queue one S3 notification (its JSON body)."""


@dataclass(frozen=True)
class UploadAudit:
    """The audit with its collaborators: plain boto3 clients, or fakes."""

    config: AuditConfig
    s3: Any
    reads: AuditReads
    watermarks: WatermarkStore
    enqueue_upload: EnqueueUpload
    renotify: Renotify
    dead_letters_waiting: Callable[[], int]
    """Messages in the uploads dead-letter queue: an upload there is not lost, and would
    make a second task if it were redriven after a repair."""
    metrics: MetricsSink | None
    clock: Callable[[], float]

    def __call__(
        self,
        *,
        since: float | None = None,
        start_after: str | None = None,
        repair: bool = True,
        time_left: Callable[[], float] = lambda: float("inf"),
    ) -> AuditReport:
        """One run. Without `since`, the scheduled pass: its window and cursor come from
        the watermark, which the run advances. With `since`, an audit of the uploads
        modified since then (epoch seconds), from `start_after` on, watermark untouched."""
        now = self.clock()
        if since is None:
            report = self._scheduled_pass(now, repair, time_left)
        else:
            report = AuditReport(
                window_since=max(since, now - self.config.max_age_seconds),
                window_until=now - self.config.grace_seconds,
                repair=repair,
                start_after=start_after,
            )
            self._walk(report, start_after, time_left)
        self._check_notifications(report, now)
        if self.metrics is not None:
            for name, count in report.counts.items():
                self.metrics.add_metric(name=METRICS[name], unit=MetricUnit.Count, value=count)
        logger.info(
            "upload audit",
            extra={"counts": report.counts, "repaired": report.repaired, "complete": report.complete},
        )
        return report

    # -- the listing ------------------------------------------------------------------------

    def _scheduled_pass(self, now: float, repair: bool, time_left: Callable[[], float]) -> AuditReport:
        mark = self.watermarks.read()
        if mark.pass_until is None:  # a new pass: its window ends a grace period ago
            oldest = now - self.config.max_age_seconds
            since = oldest if mark.since is None else max(mark.since, oldest)
            mark = replace(mark, pass_since=since, pass_until=now - self.config.grace_seconds, cursor=None)
        assert mark.pass_since is not None and mark.pass_until is not None
        report = AuditReport(
            window_since=max(mark.pass_since, now - self.config.max_age_seconds),
            window_until=mark.pass_until,
            repair=repair,
            start_after=mark.cursor,
        )
        deferred = self._recheck(mark.deferred, report)
        self._walk(report, mark.cursor, time_left, deferred=deferred)
        if report.complete:
            mark = replace(
                mark, since=mark.pass_until, pass_since=None, pass_until=None, passes=mark.passes + 1
            )
        mark = replace(mark, cursor=report.resume_after, deferred=tuple(deferred))
        advanced = self.watermarks.write(mark, now=now)
        report.watermark = "advanced" if advanced else "not advanced (another audit moved it)"
        return report

    def _walk(
        self,
        report: AuditReport,
        start_after: str | None,
        time_left: Callable[[], float],
        *,
        deferred: list[ListedObject] | None = None,
    ) -> None:
        """List from `start_after` within the page and lookup budgets; `report.resume_after`
        is the last key looked at when a budget or the time ran out."""
        config = self.config
        cursor = start_after
        while True:
            if report.pages >= config.page_budget or time_left() < _RESERVE_SECONDS:
                report.resume_after = cursor
                return
            kwargs: dict[str, Any] = {
                "Bucket": config.bucket,
                "Prefix": config.incoming_prefix,
                "MaxKeys": config.page_size,
            }
            if cursor is not None:
                kwargs["StartAfter"] = cursor
            page = self.s3.list_objects_v2(**kwargs)
            report.pages += 1
            for entry in page.get("Contents", []):
                held_full = deferred is not None and len(deferred) >= MAX_DEFERRED
                if report.checked >= config.lookup_budget or held_full:
                    report.resume_after = cursor
                    return
                report.listed += 1
                self._visit(_listed(entry), report, deferred)
                cursor = entry["Key"]
            if not page.get("IsTruncated"):
                report.resume_after = None
                report.complete = True
                return

    def _visit(self, listed: ListedObject, report: AuditReport, deferred: list[ListedObject] | None) -> None:
        if listed.key.endswith("/") or is_sidecar(listed.key):
            report.skipped["not_images"] += 1
            return
        if listed.last_modified <= report.window_since:
            report.skipped["before_window"] += 1  # checked by an earlier pass
            return
        if listed.last_modified > report.window_until:
            report.skipped["after_window"] += 1  # in flight, or the next pass's
            return
        self._check(listed, report, deferred)

    def _check(self, listed: ListedObject, report: AuditReport, deferred: list[ListedObject] | None) -> None:
        report.checked += 1
        tasks = self.reads.tasks_of(
            self.config.bucket,
            listed.key,
            received_after=listed.last_modified - self.config.clock_slack_seconds,
        )
        if not tasks:
            report.uploads_without_task.append(self._lost(listed, report, deferred))
            return
        for task in tasks:
            if task.status is TaskStatus.SUCCEEDED:
                self._check_video(task, report)

    def _lost(
        self, listed: ListedObject, report: AuditReport, deferred: list[ListedObject] | None
    ) -> LostUpload:
        held_back = None
        if report.repair:
            if report.dead_letters is None:
                report.dead_letters = self.dead_letters_waiting()
            if report.dead_letters:
                held_back = (
                    f"{report.dead_letters} message(s) in the uploads dead-letter queue: "
                    "redrive or clear them first"
                )
        repaired = report.repair and held_back is None
        task_id = listed.task_id(self.config.bucket)
        if repaired:
            self.enqueue_upload(listed.upload_event(self.config.bucket))
            logger.warning("upload without a task: its event sent again", extra={"task_id": task_id})
        else:
            logger.warning("upload without a task", extra={"task_id": task_id, "held_back": held_back})
            if held_back is not None and deferred is not None:
                deferred.append(listed)
        return LostUpload(
            key=listed.key,
            size=listed.size,
            last_modified=listed.last_modified,
            task_id=task_id,
            repaired=repaired,
            held_back=held_back,
        )

    def _recheck(self, held: tuple[ListedObject, ...], report: AuditReport) -> list[ListedObject]:
        """Uploads held back by an earlier run: those still without a task, and still
        there, are found (and repaired, if they may be now) again."""
        deferred: list[ListedObject] = []
        for listed in held:
            report.checked += 1
            if not self.reads.tasks_of(
                self.config.bucket,
                listed.key,
                received_after=listed.last_modified - self.config.clock_slack_seconds,
            ):
                report.uploads_without_task.append(self._lost(listed, report, deferred))
        return deferred

    def _check_video(self, task: Task, report: AuditReport) -> None:
        key = (
            task.video.key
            if task.video is not None
            else video_key_of(
                task.source.key,
                task.task_id,
                incoming_prefix=self.config.incoming_prefix,
                videos_prefix=self.config.videos_prefix,
            )
        )
        bucket = task.video.bucket if task.video is not None else self.config.bucket
        if _exists(self.s3, bucket, key):
            return
        expires = task.result_expires_at
        logger.warning("succeeded task without its video", extra={"task_id": task.task_id})
        report.tasks_without_video.append(
            MissingVideo(
                task_id=task.task_id,
                source_key=task.source.key,
                video_key=key,
                result_expires_at=expires,
                result_available=expires is not None and expires > self.clock(),
            )
        )

    # -- notifications ----------------------------------------------------------------------

    def _check_notifications(self, report: AuditReport, now: float) -> None:
        """Terminal tasks whose notification has been pending longer than the grace period
        (the reconciler re-publishes them every run: these are the ones it could not)."""
        for task in self.reads.pending_notifications(
            older_than=now - self.config.grace_seconds, limit=self.config.unnotified_limit
        ):
            repaired = report.repair and self.renotify(task)
            report.unnotified.append(
                UnnotifiedTask(
                    task_id=task.task_id,
                    status=task.status.value,
                    pending_since=task.finished_at,
                    repaired=repaired,
                )
            )


def _listed(entry: Mapping[str, Any]) -> ListedObject:
    return ListedObject(
        key=str(entry["Key"]),
        size=int(entry.get("Size", 0)),
        etag=str(entry.get("ETag", "")).strip('"'),
        last_modified=entry["LastModified"].timestamp(),
    )


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


# -- built from plain clients (the CLI; the Lambda's wiring does the same) ---------------------


def renotifier(store: TaskStore, announce: Callable[[Task], bool]) -> Renotify:
    """Publish through the ending path's `announce`, then clear the pending mark."""

    def renotify(task: Task) -> bool:
        if not announce(task):
            return False
        store.mark_notified(task.task_id)
        return True

    return renotify


def queue_depth(sqs: Any, queue_url: str | None) -> Callable[[], int]:
    """Messages waiting, in flight or delayed in a queue (0 when there is no queue)."""

    def depth() -> int:
        if not queue_url:
            return 0
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    return depth


def upload_audit(
    *,
    config: AuditConfig,
    s3: Any,
    dynamodb: Any,
    sqs: Any,
    sns: Any,
    table: str,
    uploads_queue_url: str,
    dead_letter_queue_url: str | None,
    topic_arn: str,
    metrics: MetricsSink | None = None,
    clock: Callable[[], float] | None = None,
) -> UploadAudit:
    """The audit over plain boto3 clients and the stack's resource names (its outputs)."""
    import time

    from i2v.notify import SnsNotifier
    from i2v.usecases.outcome import Endings

    store = TaskStore(dynamodb, table)
    now = clock or time.time
    endings = Endings(
        store=store, notify=SnsNotifier(sns, topic_arn).publish, metrics=_NoMetrics(), clock=now
    )
    return UploadAudit(
        config=config,
        s3=s3,
        reads=AuditReads(dynamodb, table),
        watermarks=WatermarkStore(dynamodb, table),
        enqueue_upload=sqs_sender(sqs, uploads_queue_url),
        renotify=renotifier(store, endings.announce),
        dead_letters_waiting=queue_depth(sqs, dead_letter_queue_url),
        metrics=metrics,
        clock=now,
    )


def sqs_sender(sqs: Any, queue_url: str) -> EnqueueUpload:
    def send(body: dict[str, Any]) -> None:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))

    return send


class _NoMetrics:
    """Re-publishing a notification ends no task: the ending path has nothing to record."""

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None:
        pass
