"""Outcome notifications: one versioned JSON message per terminal state, on one SNS topic.

Delivery is at least once (a publish that fails is retried by the reconciler), so every
message carries an `event_id` that is stable for a task's outcome: consumers deduplicate
on it. Message attributes let subscriptions filter without parsing the body.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from i2v.domain import Task, TaskStatus

SCHEMA_VERSION = "1.0"
_EVENT_NAMESPACE = uuid.UUID("0b7d3f0e-3c55-4f59-a0a3-7c86e1d2f4a9")

EVENT_TYPES = {
    TaskStatus.SUCCEEDED: "video.succeeded",
    TaskStatus.FAILED: "video.failed",
    TaskStatus.REJECTED: "video.rejected",
    TaskStatus.TIMED_OUT: "video.timed_out",
}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def event_id(task: Task) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{task.task_id}:{task.status.value}"))


def build_message(task: Task) -> dict[str, Any]:
    """The notification for a task in a terminal state (see docs/notifications.md)."""
    if task.status not in EVENT_TYPES:
        raise ValueError(f"task {task.task_id} is {task.status}, not in a terminal state")
    source = task.source
    return {
        "version": SCHEMA_VERSION,
        "event_id": event_id(task),
        "event_type": EVENT_TYPES[task.status],
        "occurred_at": _iso(task.finished_at),
        "task_id": task.task_id,
        "status": task.status.value,
        "provider": task.provider.model_dump(),
        "source": {
            "bucket": source.bucket,
            "key": source.key,
            "version_id": source.version_id,
            "size": source.size,
            "content_type": source.content_type,
            "format": source.image_format,
            "width": source.width,
            "height": source.height,
        },
        "video": task.video.model_dump() if task.video else None,
        "options": task.options.model_dump(),
        "timings": {
            "received_at": _iso(task.received_at),
            "submitted_at": _iso(task.submitted_at),
            "completed_at": _iso(task.completed_at),
            "finished_at": _iso(task.finished_at),
            "queue_seconds": _seconds(task.received_at, task.submitted_at),
            "generation_seconds": _seconds(task.submitted_at, task.completed_at),
            "total_seconds": _seconds(task.received_at, task.finished_at),
        },
        "estimated_cost_usd": task.estimated_cost_usd if task.status is TaskStatus.SUCCEEDED else None,
        "error": task.error.model_dump() if task.error else None,
    }


def message_attributes(task: Task) -> dict[str, dict[str, str]]:
    return {
        "event_type": {"DataType": "String", "StringValue": EVENT_TYPES[task.status]},
        "status": {"DataType": "String", "StringValue": task.status.value},
        "provider": {"DataType": "String", "StringValue": task.provider.name},
    }


class SnsNotifier:
    def __init__(self, sns_client: Any, topic_arn: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn

    def publish(self, task: Task) -> None:
        message = build_message(task)
        self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=f"HappyHorse video {task.status.value.lower().replace('_', ' ')}"[:100],
            Message=json.dumps(message, ensure_ascii=False, separators=(",", ":")),
            MessageAttributes=message_attributes(task),
        )
