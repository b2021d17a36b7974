"""One route's local stack as the contract sees it, and the checks every case makes.

Outcomes are read where they land: the task item in DynamoDB, the objects in S3, the
notifications on the topic, and what the route's simulator recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import IO, Any

import av
import httpx
from PIL import Image, ImageDraw

from i2v.providers import route_entry
from i2v.providers.route import RouteSettings
from local.simulators.core import Simulator
from local.stack import LocalStack, Notification
from tests.contract.routes import RouteContract

# Past a scheduled reconcile run that was under way when the queues went quiet.
SETTLE_SECONDS = 0.3
TASK_TIMEOUT_SECONDS = 60.0
QUIET_TIMEOUT_SECONDS = 30.0
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")


def image(width: int = 640, height: int = 360, image_format: str = "PNG") -> bytes:
    """A small picture in `image_format` (a Pillow format name: PNG, JPEG, BMP, WEBP)."""
    picture = Image.new("RGB", (width, height), (40, 90, 160))
    ImageDraw.Draw(picture).ellipse((width // 4, height // 4, width // 2, height // 2), fill=(250, 200, 60))
    buffer = io.BytesIO()
    picture.save(buffer, image_format)
    return buffer.getvalue()


def mp4_duration(data: bytes) -> float:
    """The video's duration in seconds; fails unless PyAV opens it and finds a video stream."""
    with av.open(io.BytesIO(data), mode="r") as container:
        assert container.streams.video, "the MP4 has no video stream"
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        assert container.duration is not None, "the MP4 states no duration"
        return float(container.duration / av.time_base)


@dataclass
class RouteUnderTest:
    """A route's contract, its running stack and what the checks need from both."""

    contract: RouteContract
    stack: LocalStack
    function_log: Path
    log_stream: IO[bytes]

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def simulator(self) -> Simulator[Any]:
        return self.stack.simulators[self.name]

    @cached_property
    def takes_webhooks(self) -> bool:
        """The registry's word: a webhook route, or a polling one."""
        return route_entry(self.name).webhooks

    @cached_property
    def settings(self) -> RouteSettings:
        """The route's settings as the submit function loads them (its input rules)."""
        environment = self._environment_with("ROUTES")
        return route_entry(self.name).load_settings(environment)

    @cached_property
    def poll_queue_url(self) -> str:
        return self._environment_with("POLL_QUEUE_URL")["POLL_QUEUE_URL"]

    def _environment_with(self, variable: str) -> dict[str, str]:
        for function in self.stack.functions.values():
            if variable in function.config.environment:
                return dict(function.config.environment)
        raise LookupError(f"no function of the stack has {variable}")

    # -- uploads --------------------------------------------------------------------------

    def key(self, case: str, suffix: str = ".png") -> str:
        """A fresh upload key naming the route and the case (URL-safe: it is found verbatim
        in the presigned image URL of a create request)."""
        return f"{self.stack.incoming_prefix}contract/{self.name}/{case}-{uuid.uuid4().hex[:10]}{suffix}"

    def upload(
        self,
        case: str,
        content: bytes | None = None,
        metadata: dict[str, str] | None = None,
        *,
        options: dict[str, Any] | None = None,
    ) -> str:
        """Upload an image (a valid PNG by default) with S3 metadata (default: a 3 s video),
        or with `options` in a JSON sidecar that the metadata names; return its key."""
        key = self.key(case)
        if options is not None:
            sidecar = self.key(f"{case}-options", ".json")
            self.stack.s3.put_object(Bucket=self.stack.bucket, Key=sidecar, Body=json.dumps(options).encode())
            metadata = {**(metadata or {}), "options": sidecar}
        self.stack.upload(image() if content is None else content, key, metadata or {"duration": "3"})
        return key

    def finished(self, key: str, timeout: float = TASK_TIMEOUT_SECONDS) -> dict[str, Any]:
        """The upload's task once it is terminal and its notification is out."""
        task = self.stack.wait_for_task(key, TERMINAL, timeout=timeout)
        self.stack.wait_for_notification(task["task_id"], timeout=30)
        return self.stack.task(task["task_id"]) or task

    def submitted(self, key: str) -> dict[str, Any]:
        """The upload's task once the provider has its task id (or it already ended)."""
        return self.stack.wait_for_task(key, ("SUBMITTED", "RUNNING", "FINALIZING", *TERMINAL), timeout=30)

    # -- what the route's provider saw ---------------------------------------------------

    def create_requests(self, key: str) -> list[dict[str, Any]]:
        """The create calls whose body points at the upload `key` (its presigned URL)."""
        return [
            record
            for record in self.simulator.state()["create_requests"]
            if key in json.dumps(record["body"], ensure_ascii=False)
        ]

    def created_task_id(self, key: str, timeout: float = 30.0) -> str:
        """The provider task id the simulator made for upload `key`, as soon as it made it."""
        deadline = time.monotonic() + timeout
        while True:
            made = [record["task_id"] for record in self.create_requests(key) if record["task_id"]]
            if made:
                return str(made[0])
            if time.monotonic() >= deadline:
                raise AssertionError(f"the {self.name} simulator made no task for {key} in {timeout} s")
            time.sleep(0.02)

    def provider_task(self, task: dict[str, Any]) -> dict[str, Any]:
        provider_task_id = task["provider"]["task_id"]
        found = self.simulator.task(provider_task_id)
        assert found is not None, f"the simulator has no task {provider_task_id}"
        return found

    def webhook_deliveries(self, task_id: str) -> list[Any]:
        """The webhooks that reached the HTTP API for a task, oldest first."""
        return self.stack.gateway.requests(f"/callbacks/{self.name}/{task_id}")

    def post_webhook(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=body, headers=headers, timeout=30)

    # -- outcomes -------------------------------------------------------------------------

    def videos(self, task_id: str) -> list[dict[str, Any]]:
        """Every stored version of every video object of a task."""
        return [video for video in self.stack.video_objects() if task_id in video["Key"]]

    def settled_notifications(self, task_id: str) -> list[Notification]:
        """The task's notifications once late duplicates would have arrived: every one
        comes from a queue message (a finalize order, an upload), or from the reconciler
        for a task whose publish failed (`notify_pending` on its item)."""
        self.wait_until_quiet()
        time.sleep(SETTLE_SECONDS)
        self.wait_until_quiet()
        item = self.stack.task(task_id)
        assert item is not None and not item.get("notify_pending"), item
        return self.stack.notifications(task_id)

    def wait_until_quiet(self, timeout: float = QUIET_TIMEOUT_SECONDS) -> None:
        """Until no message waits on the uploads, finalize or poll queue (delayed or in
        flight) and no dispatcher is invoking: nothing left over reaches the next case."""
        queues = (self.stack.uploads_queue_url, self.stack.finalize_queue_url, self.poll_queue_url)
        deadline = time.monotonic() + timeout
        while True:
            busy = any(dispatcher.busy for dispatcher in self.stack.dispatchers) or any(
                self._queued(queue) for queue in queues
            )
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"the {self.name} stack was still busy after {timeout} s")
            time.sleep(0.2)

    def _queued(self, queue_url: str) -> bool:
        counts = self.stack.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return any(value != "0" for value in counts.values())


def assert_one_video(route: RouteUnderTest, task: dict[str, Any]) -> float:
    """The task's one video: stored once, as its item describes it, a playable MP4.
    Returns its duration in seconds."""
    video = task.get("video")
    assert video is not None, f"the task has no video: {task.get('error')}"
    assert video["bucket"] == route.stack.bucket
    assert video["key"].startswith(route.stack.videos_prefix)
    assert [stored["Key"] for stored in route.videos(task["task_id"])] == [video["key"]]
    body = route.stack.s3.get_object(Bucket=route.stack.bucket, Key=video["key"])["Body"].read()
    assert len(body) == video["size"]
    assert hashlib.sha256(body).hexdigest() == video["sha256"]
    duration = mp4_duration(body)
    assert duration > 0
    return duration


def assert_no_video(route: RouteUnderTest, task: dict[str, Any]) -> None:
    assert task.get("video") is None
    assert route.videos(task["task_id"]) == []


def assert_one_notification(
    route: RouteUnderTest, task: dict[str, Any], *, settle: bool = True, of_route: bool = True
) -> Notification:
    """Exactly one notification, about this task's outcome and, unless `of_route` is False,
    naming this route (once late duplicates would have arrived, unless `settle` is False:
    a later check waits)."""
    task_id = task["task_id"]
    notifications = route.settled_notifications(task_id) if settle else route.stack.notifications(task_id)
    assert len(notifications) == 1, [n.message for n in notifications]
    (notification,) = notifications
    # Every route's real notification meets the published contract
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _contract().iter_errors(notification.message)]
    assert not errors, errors
    assert notification.attributes["status"] == task["status"]
    assert notification.message["provider"]["name"] == task["provider"]["name"]
    assert notification.message["provider"]["task_id"] == task["provider"].get("task_id")
    assert notification.attributes["provider"] == task["provider"]["name"]
    if of_route:
        assert task["provider"]["name"] == route.name
    assert notification.message["source"]["key"] == task["source"]["key"]
    assert notification.message["error"] == task.get("error")
    return notification


@cache
def _contract() -> Any:
    """The committed notification schema (docs/contracts/), formats checked."""
    from jsonschema import Draft202012Validator

    from local.contracts import NOTIFICATION_SCHEMA

    schema = json.loads(NOTIFICATION_SCHEMA.read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
