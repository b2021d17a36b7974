"""Uploads through the whole local stack: S3 -> SQS -> submit -> simulator -> webhook ->
callback -> S3 video -> SNS, and the ways that path goes wrong."""

from __future__ import annotations

import hashlib
import json
import time
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from i2v.tasks.store import TaskStore
from local.simulators.magnific import MagnificSimulator
from local.stack import LocalStack
from tests.integration.conftest import RECONCILE_AFTER_SECONDS
from tests.integration.helpers import (
    create_requests_for,
    finished_and_notified,
    png,
    settled_notifications,
    unique_key,
    video_duration,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_an_upload_becomes_a_stored_video_and_one_notification(stack: LocalStack) -> None:
    # Given an image with a prompt (percent-encoded UTF-8, as S3 metadata is ASCII) and options
    key = unique_key(stack, "happy path é")
    prompt = "A horse gallops through the café's garden"
    metadata = {"prompt": quote(prompt), "duration": "3", "resolution": "720P"}

    # When it is uploaded
    stack.upload(png(), key, metadata)
    task = stack.wait_for_task(key, timeout=60)

    # Then the task succeeded with the requested options
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert task["options"]["prompt"] == prompt
    assert task["options"]["duration"] == 3
    # and its video is stored under videos/, exactly as the task describes it
    video = task["video"]
    assert video["bucket"] == stack.bucket
    assert video["key"].startswith(stack.videos_prefix)
    body = stack.s3.get_object(Bucket=stack.bucket, Key=video["key"])["Body"].read()
    assert len(body) == video["size"]
    assert hashlib.sha256(body).hexdigest() == video["sha256"]
    assert video_duration(body) == pytest.approx(3.0, abs=0.1)
    # and exactly one notification says so, with attributes to filter on
    notifications = settled_notifications(stack, task["task_id"])
    assert len(notifications) == 1
    notification = notifications[0]
    assert notification.attributes == {
        "event_type": "video.succeeded",
        "status": "SUCCEEDED",
        "provider": "magnific",
    }
    assert notification.message["source"]["key"] == key
    assert notification.message["video"]["key"] == video["key"]
    assert notification.message["video"]["sha256"] == video["sha256"]


def test_the_reconciler_publishes_a_pending_notification_again(stack: LocalStack) -> None:
    # Given a finished task whose notification is marked pending (its publish failed), as
    # the ending step marks it, unchanged for longer than the reconciler waits
    key = unique_key(stack, "pending notification")
    stack.upload(png(), key, {"duration": "3"})
    done = finished_and_notified(stack, key)
    assert done["status"] == "SUCCEEDED", done.get("error")
    TaskStore(stack.dynamodb, stack.table).reopen_for_notification(
        done["task_id"], now=time.time() - RECONCILE_AFTER_SECONDS - 1
    )

    # When the reconciler's schedule comes round
    deadline = time.monotonic() + 30
    while len(stack.notifications(done["task_id"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)

    # Then the same event went out again, once, and the task is no longer pending
    announced = settled_notifications(stack, done["task_id"])
    assert [n.message["event_id"] for n in announced] == [announced[0].message["event_id"]] * 2
    task = stack.task(done["task_id"]) or {}
    assert "notify_pending" not in task and "open_shard" not in task


@pytest.mark.parametrize(
    ("name", "suffix", "content"),
    [
        ("text renamed", ".jpg", b"These are holiday notes, not a picture.\n" * 20),
        ("too small", ".png", png(200, 200)),
    ],
    ids=["text-file-named-jpg", "png-200x200"],
)
def test_a_bad_image_is_rejected_before_any_provider_call(
    stack: LocalStack, simulator: MagnificSimulator, name: str, suffix: str, content: bytes
) -> None:
    # Given an upload the provider would refuse
    key = unique_key(stack, name, suffix)

    # When it is uploaded
    stack.upload(content, key, {"prompt": "move"})
    task = stack.wait_for_task(key, timeout=60)

    # Then the task is REJECTED with its reason, and the notification carries it
    assert task["status"] == "REJECTED"
    assert task["error"]["code"]
    assert task["error"]["message"]
    notifications = settled_notifications(stack, task["task_id"])
    assert [n.attributes["event_type"] for n in notifications] == ["video.rejected"]
    assert notifications[0].attributes["status"] == "REJECTED"
    assert notifications[0].message["error"] == task["error"]
    # and nothing was paid for: the provider never got a create call
    assert create_requests_for(simulator, key) == []


def test_a_replayed_completed_callback_changes_nothing(stack: LocalStack) -> None:
    # Given a finished task and the COMPLETED webhook that finished it
    key = unique_key(stack, "replay")
    stack.upload(png(), key, {"duration": "3"})
    task = finished_and_notified(stack, key)
    assert task["status"] == "SUCCEEDED", task.get("error")
    completed = [
        request
        for request in stack.gateway.requests(f"/callbacks/magnific/{task['task_id']}")
        if json.loads(request.body).get("status") == "COMPLETED"
    ]
    assert [request.status for request in completed] == [200]
    original = completed[0]
    stored = stack.s3.head_object(Bucket=stack.bucket, Key=task["video"]["key"])

    # When the exact same request arrives again (a provider retry)
    headers = [(k, v) for k, v in original.headers if k.lower() not in ("host", "content-length")]
    answer = httpx.post(stack.gateway.url + original.target, headers=headers, content=original.body)

    # Then it is acknowledged and is a no-op: same item, same single video, one notification
    assert answer.status_code == 200
    assert stack.task(task["task_id"]) == task
    again = stack.s3.head_object(Bucket=stack.bucket, Key=task["video"]["key"])
    assert (again["ETag"], again["LastModified"]) == (stored["ETag"], stored["LastModified"])
    videos = [v for v in stack.video_objects() if v["Key"] == task["video"]["key"]]
    assert len(videos) == 1
    assert len(settled_notifications(stack, task["task_id"])) == 1


def test_a_dropped_webhook_is_finished_by_the_reconciler(
    stack: LocalStack, simulator: MagnificSimulator
) -> None:
    # Given a provider whose webhooks for the next task never arrive
    simulator.set_faults(drop_webhooks=1)
    key = unique_key(stack, "dropped webhook")

    # When an image is uploaded
    stack.upload(png(), key, {"duration": "3"})
    task = stack.wait_for_task(key, timeout=60)

    # Then the reconciler found the finished provider task and stored the video
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert stack.gateway.requests(f"/callbacks/magnific/{task['task_id']}") == []
    assert simulator.state()["counters"]["webhooks_dropped"] >= 1
    assert stack.s3.head_object(Bucket=stack.bucket, Key=task["video"]["key"])["ContentLength"] > 0
    assert len(settled_notifications(stack, task["task_id"])) == 1


@pytest.mark.parametrize(
    ("errors", "retry_after", "minimum_gap"),
    [
        ([503, 503], None, 0.9),  # backoff from 1 s, whole seconds
        ([429], 3, 2.9),  # never sooner than Retry-After
    ],
    ids=["503-twice", "429-with-retry-after"],
)
def test_provider_errors_on_create_are_retried_then_succeed(
    stack: LocalStack,
    simulator: MagnificSimulator,
    errors: list[int],
    retry_after: int | None,
    minimum_gap: float,
) -> None:
    # Given a provider that answers the next create calls with errors
    simulator.set_faults(submit_errors=errors, retry_after=retry_after)
    key = unique_key(stack, "provider errors")

    # When an image is uploaded
    stack.upload(png(), key, {"duration": "3"})
    task = stack.wait_for_task(key, timeout=90)

    # Then each error was retried after a backoff, and the task succeeded in the end
    assert task["status"] == "SUCCEEDED", task.get("error")
    calls = create_requests_for(simulator, key)
    assert [call["response_status"] for call in calls] == [*errors, 200]
    gaps = [later["received_at"] - earlier["received_at"] for earlier, later in pairwise(calls)]
    assert all(gap >= minimum_gap for gap in gaps), gaps
    assert task["submit_attempts"] == len(errors) + 1
    assert len(settled_notifications(stack, task["task_id"])) == 1


def test_no_secret_token_or_signed_url_reaches_the_logs(stack: LocalStack, function_log: Path) -> None:
    # Given an upload that went all the way, and a forged callback for it
    key = unique_key(stack, "log hygiene")
    stack.upload(png(), key, {"prompt": "quiet logs"})
    task = stack.wait_for_task(key, timeout=60)
    assert task["status"] == "SUCCEEDED", task.get("error")
    forged = httpx.post(
        f"{stack.gateway.url}/callbacks/magnific/{task['task_id']}?token=forged-token-123",
        json={"task_id": "x", "status": "COMPLETED", "generated": []},
        headers={"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,Zm9yZ2Vk"},
        timeout=30,
    )
    assert forged.status_code == 401
    # Then the functions' logs hold none of the secrets, tokens, signatures or signed URLs
    logged = function_log.read_text(encoding="utf-8", errors="replace")
    assert task["task_id"] in logged  # the logs are there, with the correlation id
    for secret in (
        stack.api_key,
        stack.webhook_secret,
        "forged-token-123",
        "v1,Zm9yZ2Vk",
        "token=",
        "X-Amz-Signature",
        "X-Amz-Credential",
    ):
        assert secret not in logged, f"{secret[:12]}... reached the logs"
