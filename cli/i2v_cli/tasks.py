"""Finding tasks, and retrying one: reads of the task table, one message to the uploads queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from i2v_cli.aws import Aws, aws_errors
from i2v_cli.errors import CliError, NotFound, Refused, WaitTimedOut
from i2v_cli.stack import INCOMING_PREFIX

if TYPE_CHECKING:
    from i2v.domain import Task

# The task table's index of every task of one upload key (template.yaml).
SOURCE_INDEX = "by-source"
RETRYABLE = ("FAILED", "TIMED_OUT", "REJECTED")
# The sequencer of a retry's S3-shaped message: its task id derives from it (decision 49).
RETRY_SEQUENCER = "retry-{task_id}"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def task_of(item: dict[str, Any]) -> Task:
    from boto3.dynamodb.types import TypeDeserializer

    from i2v.domain import Task

    deserializer = TypeDeserializer()
    return Task.model_validate({k: _plain(deserializer.deserialize(v)) for k, v in item.items()})


def is_task_id(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def source_key(aws: Aws, text: str) -> str:
    """An upload key from `incoming/cat.jpg` or `s3://bucket/incoming/cat.jpg`."""
    prefix = f"s3://{aws.stack.bucket}/"
    if text.startswith("s3://"):
        if not text.startswith(prefix):
            raise CliError(f"{text} is not in this stack's bucket ({aws.stack.bucket})")
        return text[len(prefix) :]
    return text


def get_task(aws: Aws, task_id: str) -> Task:
    with aws_errors():
        item = aws.dynamodb.get_item(
            TableName=aws.stack.table, Key={"task_id": {"S": task_id}}, ConsistentRead=True
        ).get("Item")
    if not item:
        raise NotFound(f"no task {task_id} in table {aws.stack.table}")
    return task_of(item)


def tasks_of_key(aws: Aws, key: str, *, since: float | None = None) -> list[Task]:
    """The upload's tasks, oldest first (one per upload or retry of that key)."""
    condition = "source_uri = :uri"
    values: dict[str, Any] = {":uri": {"S": f"s3://{aws.stack.bucket}/{key}"}}
    if since is not None:
        condition += " AND received_at >= :since"
        values[":since"] = {"N": repr(since)}
    found: list[Task] = []
    with aws_errors():
        paginator = aws.dynamodb.get_paginator("query")
        pages = paginator.paginate(
            TableName=aws.stack.table,
            IndexName=SOURCE_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
        for page in pages:
            found.extend(task_of(item) for item in page.get("Items", []))
    return found


def find_tasks(aws: Aws, task_id_or_key: str) -> list[Task]:
    if is_task_id(task_id_or_key):
        return [get_task(aws, task_id_or_key)]
    key = source_key(aws, task_id_or_key)
    found = tasks_of_key(aws, key)
    if not found:
        raise NotFound(f"no task for s3://{aws.stack.bucket}/{key}")
    return found


def list_tasks(aws: Aws, *, statuses: Sequence[str], since: float, limit: int) -> list[Task]:
    """Tasks received since `since` in `statuses`, newest first. Open ones come from the sparse
    open-tasks index; any terminal status needs a filtered scan of the table."""
    from i2v.domain import TaskStatus
    from i2v.tasks.store import OPEN_INDEX, OPEN_SHARD

    values: dict[str, Any] = {":since": {"N": repr(since)}}
    values |= {f":s{i}": {"S": status} for i, status in enumerate(statuses)}
    in_statuses = ", ".join(f":s{i}" for i in range(len(statuses)))
    request: dict[str, Any] = {
        "TableName": aws.stack.table,
        "ExpressionAttributeNames": {"#status": "status"},
        "FilterExpression": f"#status IN ({in_statuses}) AND received_at >= :since",
        "ExpressionAttributeValues": values,
    }
    operation = "scan"
    if not any(TaskStatus(status).is_terminal for status in statuses):
        operation = "query"
        values[":shard"] = {"S": OPEN_SHARD}
        request |= {"IndexName": OPEN_INDEX, "KeyConditionExpression": "open_shard = :shard"}
    found: list[Task] = []
    with aws_errors():
        for page in aws.dynamodb.get_paginator(operation).paginate(**request):
            found.extend(task_of(item) for item in page.get("Items", []))
    found.sort(key=lambda task: task.received_at, reverse=True)
    return found[:limit]


def scan_since(aws: Aws, since: float, *, with_attempts: bool = False) -> Iterator[Task]:
    """Every task received since `since` (a filtered scan: the table has no time index);
    only those with provider attempts recorded, if asked. The audit's watermark item, which
    has no status, is not a task."""
    condition = "received_at >= :since AND attribute_exists(#status)"
    if with_attempts:
        condition += " AND attribute_exists(attempts)"
    with aws_errors():
        pages = aws.dynamodb.get_paginator("scan").paginate(
            TableName=aws.stack.table,
            FilterExpression=condition,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":since": {"N": repr(since)}},
        )
        for page in pages:
            yield from (task_of(item) for item in page.get("Items", []))


@dataclass(frozen=True)
class Retry:
    """What `retry` did: the new task's id, and whether an earlier retry had already made it."""

    retried_task_id: str
    task_id: str
    key: str
    already: Task | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "retried_task_id": self.retried_task_id,
            "task_id": self.task_id,
            "key": self.key,
            "already_retried": self.already is not None,
            "status": self.already.status.value if self.already else "QUEUED",
        }


def retry(aws: Aws, task_id: str) -> Retry:
    """Send the task's upload through the submit path again, every check included.

    The message is the S3 event the upload would have made, with a sequencer derived from
    the old task's id: the new task's id is `derive_task_id(bucket, key, "retry-<old id>")`,
    so running retry twice makes one task, and a failed retry is retried by its own id.
    """
    from i2v.domain import derive_task_id

    task = get_task(aws, task_id)
    if task.status.value not in RETRYABLE:
        raise Refused(
            f"task {task_id} is {task.status.value}: only {', '.join(RETRYABLE)} tasks can be retried"
        )
    bucket, key = task.source.bucket, task.source.key
    if not key.startswith(INCOMING_PREFIX):
        raise Refused(f"task {task_id}'s source {key!r} is not under {INCOMING_PREFIX}")
    sequencer = RETRY_SEQUENCER.format(task_id=task_id)
    new_id = derive_task_id(bucket, key, sequencer)
    already = _existing(aws, new_id)
    if already is not None:
        return Retry(task_id, new_id, key, already)
    head = _head(aws, bucket, key)
    message = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": aws.stack.region or "",
                "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "eventName": "ObjectCreated:Put",
                # Who sent this message (the S3 events' own field): retries show in the queue.
                "requestParameters": {"sourceIPAddress": "i2v-cli-retry"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": head["ContentLength"],
                        "eTag": str(head.get("ETag", "")).strip('"'),
                        "sequencer": sequencer,
                    },
                },
            }
        ]
    }
    with aws_errors():
        aws.sqs.send_message(QueueUrl=aws.stack.uploads_queue_url, MessageBody=json.dumps(message))
    return Retry(task_id, new_id, key, None)


def wait_for_task(aws: Aws, task_id: str, *, timeout: float, poll_seconds: float = 2.0) -> Task:
    """The task once it has ended (it may not exist yet: its message is still on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        task = _existing(aws, task_id)
        if task is not None and task.status.is_terminal:
            return task
        if time.monotonic() >= deadline:
            raise WaitTimedOut(f"task {task_id} had not ended after {timeout:g} s")
        time.sleep(poll_seconds)


def _existing(aws: Aws, task_id: str) -> Task | None:
    try:
        return get_task(aws, task_id)
    except NotFound:
        return None


def _head(aws: Aws, bucket: str, key: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    with aws_errors():
        try:
            return dict(aws.s3.head_object(Bucket=bucket, Key=key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(
                    f"s3://{bucket}/{key} is gone: upload the fixed image again instead"
                ) from error
            raise
