"""What reaches the uploads queue without being an image upload makes no task."""

from __future__ import annotations

import json

import pytest

from local.stack import LocalStack
from tests.integration.helpers import png, settled_notifications, unique_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def task_count(stack: LocalStack) -> int:
    return int(stack.dynamodb.scan(TableName=stack.table, Select="COUNT", ConsistentRead=True)["Count"])


def queued_messages(stack: LocalStack) -> int:
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.uploads_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_an_s3_test_event_makes_no_task(stack: LocalStack) -> None:
    # Given the stack at rest
    stack.wait_until_idle()
    tasks_before = task_count(stack)

    # When the bucket's notification configuration is written again, S3 sends s3:TestEvent
    configuration = stack.s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    configuration.pop("ResponseMetadata")
    stack.s3.put_bucket_notification_configuration(
        Bucket=stack.bucket, NotificationConfiguration=configuration
    )

    # Then it reaches the uploads queue, the submit function takes it off, and no task appears
    assert queued_messages(stack) >= 1
    stack.wait_until_idle()
    assert task_count(stack) == tasks_before
    assert stack.dead_letter_queue_url is not None
    dead_letters = stack.sqs.get_queue_attributes(
        QueueUrl=stack.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert dead_letters == "0"


def test_an_options_sidecar_makes_no_task_and_its_image_uses_it(stack: LocalStack) -> None:
    # Given a JSON sidecar with a long prompt, uploaded under incoming/ before its image
    sidecar_key = unique_key(stack, "sidecar", ".json")
    image_key = sidecar_key.removesuffix(".json") + ".png"
    prompt = "A long, careful prompt from the sidecar ✓ " * 20
    stack.upload(json.dumps({"prompt": prompt, "duration": 3}).encode(), sidecar_key)

    # When the image naming it is uploaded
    stack.upload(png(), image_key, {"options": sidecar_key})
    task = stack.wait_for_task(image_key, timeout=60)
    stack.wait_until_idle()

    # Then only the image became a task, with the sidecar's options
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert task["options"]["prompt"] == prompt
    assert task["options"]["duration"] == 3
    assert stack.tasks_for(sidecar_key) == []
    assert settled_notifications(stack, sidecar_key) == []
