"""Inputs and checks shared by the integration tests."""

from __future__ import annotations

import io
import time
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import av
from PIL import Image, ImageDraw

from local.simulators.magnific import MagnificSimulator
from local.stack import LocalStack, Notification

# Long enough for the reconciler to re-run a few times and publish a duplicate, if it would.
SETTLE_SECONDS = 1.5


def png(width: int = 640, height: int = 360) -> bytes:
    image = Image.new("RGB", (width, height), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, width // 2, height // 2), fill=(250, 200, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def unique_key(stack: LocalStack, name: str, suffix: str = ".png") -> str:
    return f"{stack.incoming_prefix}{name} {uuid.uuid4().hex[:8]}{suffix}"


def create_requests_for(simulator: MagnificSimulator, key: str) -> list[dict[str, Any]]:
    """The create calls the simulator got whose image URL points at `key`."""
    path_end = "/" + quote(key)
    return [
        record
        for record in simulator.state()["create_requests"]
        if isinstance(record["body"], dict)
        and urlsplit(str(record["body"].get("image_url", ""))).path.endswith(path_end)
    ]


def settled_notifications(stack: LocalStack, task_id: str) -> list[Notification]:
    """The task's notifications once late duplicates would have arrived."""
    time.sleep(SETTLE_SECONDS)
    return stack.notifications(task_id)


def finished_and_notified(stack: LocalStack, key: str) -> dict[str, Any]:
    """The upload's task once finished and its notification received (the last step: the
    terminal write comes first)."""
    task = stack.wait_for_task(key, timeout=60)
    stack.wait_for_notification(task["task_id"], timeout=30)
    return stack.task(task["task_id"]) or task


def video_duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        return float(stream.duration * stream.time_base)


def upload_without_event(stack: LocalStack, key: str) -> None:
    """PUT an image while the bucket notifies no one: its S3 event is lost."""
    configuration = stack.s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    configuration.pop("ResponseMetadata")
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    try:
        stack.upload(png(), key, {"duration": "3"})
    finally:
        stack.s3.put_bucket_notification_configuration(
            Bucket=stack.bucket, NotificationConfiguration=configuration
        )
