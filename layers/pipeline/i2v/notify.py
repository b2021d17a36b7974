"""Outcome notifications: one versioned JSON message per event, on one SNS topic and,
when the stack has one, on an EventBridge bus.

`NotificationMessage` builds each message: the JSON on the wire is its `model_dump`, and
the published JSON Schema (docs/contracts/notification.schema.json) is generated from it,
so the two cannot drift. Delivery is at least once (a publish that fails is retried by the
reconciler), so every message carries an `event_id` that is stable for a task's outcome:
consumers deduplicate on it. Message attributes let subscriptions filter without parsing
the body.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from i2v.domain import ModelVersion, Resolution, Task, TaskStatus

SCHEMA_VERSION = "1.1"
EVENT_SOURCE = "happyhorse.i2v"
"""The `source` of the events on the EventBridge bus."""
_EVENT_NAMESPACE = uuid.UUID("0b7d3f0e-3c55-4f59-a0a3-7c86e1d2f4a9")

# The statuses that are announced, and each one's event type: a new event type is one line
# here (the message, its attributes, the schema's enums and the tests follow from it).
EVENT_TYPES = {
    TaskStatus.SUCCEEDED: "video.succeeded",
    TaskStatus.FAILED: "video.failed",
    TaskStatus.REJECTED: "video.rejected",
    TaskStatus.TIMED_OUT: "video.timed_out",
    TaskStatus.DEFERRED: "video.deferred",
}

IsoTime = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        json_schema_extra={"format": "date-time"},
        description="ISO 8601 UTC, to the millisecond.",
    ),
]
Seconds = Annotated[float, Field(ge=0)]


def _event_pairs(schema: dict[str, Any]) -> None:
    """Each status goes with its one event type (called when the schema is made)."""
    schema["allOf"] = [
        {
            "if": {"properties": {"status": {"const": status.value}}},
            "then": {"properties": {"event_type": {"const": event_type}}},
        }
        for status, event_type in EVENT_TYPES.items()
    ]


# defer_build: each model's validator is built on the first message, not at import (the
# callback and reconcile functions import this module on their cold path).
class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class NotifiedProvider(_Part):
    """The route that made (or was to make) the video."""

    name: str = Field(description="The route: magnific, dashscope, apiyi, aimlapi or fal.")
    task_id: str | None = Field(description="The provider's own task id; null if it never made one.")


class NotifiedSource(_Part):
    """The uploaded image."""

    bucket: str
    key: str
    version_id: str | None = Field(description="The S3 version id, on a versioned bucket.")
    size: int | None = Field(ge=0, description="Bytes.")
    content_type: str | None
    format: str | None = Field(description="The format read from the file's content: jpeg, png, bmp or webp.")
    width: int | None = Field(ge=0)
    height: int | None = Field(ge=0)


class NotifiedVideo(_Part):
    """The stored video."""

    bucket: str
    key: str
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the stored bytes.")
    content_type: str


class NotifiedOptions(_Part):
    """What the task was asked for: the stack's defaults, overridden by the upload."""

    prompt: str
    resolution: Resolution
    duration: int = Field(description="Seconds of video.")
    seed: int | None
    model: ModelVersion | None = Field(description="HappyHorse version; null is the route's default.")
    provider: str | None = Field(description="The route the upload asked for; null is the stack's choice.")


class Timings(_Part):
    """When each step happened; a value that does not apply is null."""

    received_at: IsoTime
    submitted_at: IsoTime | None
    completed_at: IsoTime | None = Field(description="When the provider finished.")
    finished_at: IsoTime | None = Field(description="When the outcome was recorded here.")
    queue_seconds: Seconds | None = Field(description="From the upload to the provider's acceptance.")
    generation_seconds: Seconds | None = Field(description="From the provider's acceptance to its result.")
    total_seconds: Seconds | None = Field(description="From the upload to the outcome.")


class NotifiedError(_Part):
    """Why the task did not succeed."""

    code: str = Field(description="Stable, for machines (docs/notifications.md lists them).")
    message: str = Field(description="For people.")


class NotificationMessage(_Part):
    """A HappyHorse image-to-video notification: one per task event (docs/notifications.md)."""

    model_config = ConfigDict(json_schema_extra=_event_pairs)

    version: str = Field(
        pattern=r"^1\.\d+$",
        description="Schema version: a minor version adds fields or event types, never removes or retypes.",
    )
    event_id: uuid.UUID = Field(description="Stable for a task's event: deduplicate on it.")
    event_type: str = Field(json_schema_extra={"enum": list(EVENT_TYPES.values())})
    occurred_at: IsoTime
    task_id: str = Field(description="The one id of the upload's journey.")
    status: str = Field(json_schema_extra={"enum": [status.value for status in EVENT_TYPES]})
    provider: NotifiedProvider
    source: NotifiedSource
    video: NotifiedVideo | None = Field(description="Set when the video is stored.")
    options: NotifiedOptions
    timings: Timings
    estimated_cost_usd: Annotated[float, Field(ge=0)] | None = Field(
        description="The task's estimate from its route's public price (not a bill); null if it has none."
    )
    error: NotifiedError | None = Field(
        description="Null on success; why the task failed, or why an event that ends nothing happened."
    )

    @classmethod
    def of(cls, task: Task) -> NotificationMessage:
        """The message for a task whose status is announced (see EVENT_TYPES)."""
        if task.status not in EVENT_TYPES:
            raise ValueError(f"task {task.task_id} is {task.status}, which has no notification")
        source, options = task.source, task.options
        # An event that ends nothing (a deferral) says why through the task's last error.
        reason = task.error if task.status.is_terminal else task.last_error
        return cls(
            version=SCHEMA_VERSION,
            event_id=uuid.UUID(event_id(task)),
            event_type=EVENT_TYPES[task.status],
            occurred_at=_iso(_occurred(task)),
            task_id=task.task_id,
            status=task.status.value,
            provider=NotifiedProvider(name=task.provider.name, task_id=task.provider.task_id),
            source=NotifiedSource(
                bucket=source.bucket,
                key=source.key,
                version_id=source.version_id,
                size=source.size,
                content_type=source.content_type,
                format=source.image_format,
                width=source.width,
                height=source.height,
            ),
            video=NotifiedVideo(**task.video.model_dump()) if task.video else None,
            options=NotifiedOptions(**options.model_dump()),
            timings=Timings(
                received_at=_iso(task.received_at),
                submitted_at=_iso_or_none(task.submitted_at),
                completed_at=_iso_or_none(task.completed_at),
                finished_at=_iso_or_none(task.finished_at),
                queue_seconds=_seconds(task.received_at, task.submitted_at),
                generation_seconds=_seconds(task.submitted_at, task.completed_at),
                total_seconds=_seconds(task.received_at, task.finished_at),
            ),
            estimated_cost_usd=task.estimated_cost_usd,
            error=NotifiedError(**reason.model_dump()) if reason else None,
        )


def _occurred(task: Task) -> float:
    """The outcome's time; for an event that ends nothing (no finish), the task's last change."""
    return task.finished_at if task.finished_at is not None else task.updated_at


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else _iso(epoch)


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def event_id(task: Task) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{task.task_id}:{task.status.value}"))


def build_message(task: Task) -> dict[str, Any]:
    """The notification for a task, as it goes on the wire (see docs/notifications.md)."""
    return NotificationMessage.of(task).model_dump(mode="json")


def message_attributes(task: Task) -> dict[str, dict[str, str]]:
    attributes = {
        "event_type": {"DataType": "String", "StringValue": EVENT_TYPES[task.status]},
        "status": {"DataType": "String", "StringValue": task.status.value},
        "provider": {"DataType": "String", "StringValue": task.provider.name},
    }
    # A Number, so a policy can filter on it ("numeric"); absent when the route has no price.
    if task.estimated_cost_usd is not None:
        attributes["estimated_cost_usd"] = {
            "DataType": "Number",
            "StringValue": f"{task.estimated_cost_usd:g}",
        }
    return attributes


class UndeliveredEvent(RuntimeError):
    """EventBridge took the call but not the event (PutEvents reports failed entries)."""


class SnsNotifier:
    """Publishes each message on the topic and, given a bus, on EventBridge too.

    The bus is sent to first: if it fails, nothing has gone out and the reconciler's retry
    sends each channel once; if the topic then fails, the retry sends the event to the bus
    again, which its consumers deduplicate on `event_id` as they must anyway (decision 44).
    """

    def __init__(
        self, sns_client: Any, topic_arn: str, *, events_client: Any = None, event_bus: str = ""
    ) -> None:
        if event_bus and events_client is None:
            raise ValueError("an event bus needs an EventBridge client")
        self._sns = sns_client
        self._topic_arn = topic_arn
        self._events = events_client
        self._event_bus = event_bus

    def publish(self, task: Task) -> None:
        message = NotificationMessage.of(task)
        body = json.dumps(message.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
        if self._event_bus:
            self._put_event(message.event_type, body, _occurred(task))
        self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=f"HappyHorse video {task.status.value.lower().replace('_', ' ')}"[:100],
            Message=body,
            MessageAttributes=message_attributes(task),
        )

    def _put_event(self, event_type: str, body: str, occurred: float) -> None:
        answer = self._events.put_events(
            Entries=[
                {
                    "EventBusName": self._event_bus,
                    "Source": EVENT_SOURCE,
                    "DetailType": event_type,
                    "Detail": body,
                    "Time": datetime.fromtimestamp(occurred, UTC),
                }
            ]
        )
        if answer.get("FailedEntryCount"):
            [entry] = answer["Entries"]
            raise UndeliveredEvent(
                f"EventBridge refused the event: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )
