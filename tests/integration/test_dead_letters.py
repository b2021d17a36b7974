"""Poison messages end in their queue's dead-letter queue with their reason, and a redrive
brings them back (docs/decisions.md, 31; docs/operations.md)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.simulators.magnific import MagnificSimulator
from local.stack import LocalStack
from tests.integration.helpers import create_requests_for, png, settled_notifications, unique_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Message = dict[str, Any]


def queue_url(stack: LocalStack, logical_id: str) -> str:
    urls = stack.sqs.list_queues(QueueNamePrefix=f"{stack.stack_name}-{logical_id}-").get("QueueUrls", [])
    assert len(urls) == 1, urls
    return str(urls[0])


def queue_arn(stack: LocalStack, url: str) -> str:
    return str(
        stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    )


def dead_letter_url(stack: LocalStack, source_url: str) -> str:
    policy = stack.sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy"])[
        "Attributes"
    ]
    name = json.loads(policy["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[1]
    return str(stack.sqs.get_queue_url(QueueName=name)["QueueUrl"])


def take_dead_letter(stack: LocalStack, url: str, marker: str, timeout: float = 30.0) -> Message:
    """The one message whose body holds `marker`, taken off the queue (the stack is shared:
    other tests expect empty dead-letter queues); others are put back at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in stack.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", []):
            if marker in message["Body"]:
                stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                return dict(message)
            stack.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    raise AssertionError(f"no message holding {marker!r} reached {url} in {timeout} s")


def failure(message: Message) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()}


def redrive(stack: LocalStack, dead_letter: Message, source_url: str) -> None:
    """docs/operations.md's redrive where StartMessageMoveTask is missing (moto 5.2.5): the
    body sent back to its queue as it was (take_dead_letter deleted it from the DLQ)."""
    stack.sqs.send_message(QueueUrl=source_url, MessageBody=dead_letter["Body"])


@pytest.fixture
def max_receive_count(stack: LocalStack) -> Iterator[Callable[[str, int], None]]:
    """Sets a queue's maxReceiveCount for one test (the functions read it from the queue)."""
    changed: dict[str, str] = {}

    def set_count(url: str, count: int) -> None:
        policy = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        changed.setdefault(url, policy["RedrivePolicy"])
        redrive_policy = json.loads(policy["RedrivePolicy"]) | {"maxReceiveCount": count}
        stack.sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(redrive_policy)})

    yield set_count
    for url, original in changed.items():
        stack.sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": original})


# Bodies no delivery could ever handle, one per queue, with the field the reason must name.
UNREADABLE = {
    "UploadsQueue": ("this is not an S3 notification {marker}", "cannot be read"),
    "FinalizeQueue": (
        '{{"task": {{"task_id": "{marker}"}}, "video_url": "https://v.example.com/a.mp4?X-Amz-Signature=s3cr3t"}}',
        "task.status",
    ),
    "PollQueue": ('{{"task_id": "{marker}", "route": "magnific"}}', "provider_task_id"),
}


@pytest.mark.parametrize("logical_id", sorted(UNREADABLE))
def test_an_unreadable_message_goes_to_its_dead_letter_queue_at_once_with_its_reason(
    stack: LocalStack, logical_id: str
) -> None:
    # Given a message on one of the stack's queues that no delivery could ever handle
    source_url = queue_url(stack, logical_id)
    marker = uuid.uuid4().hex
    template, named_field = UNREADABLE[logical_id]
    body = template.format(marker=marker)
    tasks_before = stack.dynamodb.scan(TableName=stack.table, Select="COUNT", ConsistentRead=True)["Count"]

    # When its function receives it
    sent = stack.sqs.send_message(QueueUrl=source_url, MessageBody=body)
    dead_letter = take_dead_letter(stack, dead_letter_url(stack, source_url), marker)

    # Then the dead-letter queue holds it unchanged, on its first delivery, with the reason
    # naming the field at fault and none of the values (the URL's signature stays out)
    reason = failure(dead_letter)
    assert dead_letter["Body"] == body
    assert reason["failure_code"] == "UNREADABLE_MESSAGE"
    assert named_field in reason["failure_reason"]
    assert "s3cr3t" not in reason["failure_reason"]
    assert reason["failed_queue"] == queue_arn(stack, source_url)
    assert reason["failed_message_id"] == sent["MessageId"]
    assert reason["receive_count"] == "1"
    # And it was acknowledged, not left to be retried, and made no task
    stack.wait_until_idle()
    counts = stack.sqs.get_queue_attributes(
        QueueUrl=source_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    assert (
        stack.dynamodb.scan(TableName=stack.table, Select="COUNT", ConsistentRead=True)["Count"]
        == tasks_before
    )


def test_an_upload_failing_its_last_delivery_carries_its_reason_and_a_redrive_finishes_it(
    stack: LocalStack, simulator: MagnificSimulator, max_receive_count: Callable[[str, int], None]
) -> None:
    # Given uploads allowed two deliveries and a provider that fails the next two create calls
    max_receive_count(stack.uploads_queue_url, 2)
    simulator.set_faults(submit_errors=[503, 503])
    key = unique_key(stack, "dead letter")
    marker = key.rsplit(" ", 1)[1].removesuffix(".png")

    # When an image is uploaded
    stack.upload(png(), key)

    # Then after its second failed delivery it is in the dead-letter queue with the reason
    assert stack.dead_letter_queue_url is not None
    dead_letter = take_dead_letter(stack, stack.dead_letter_queue_url, marker, timeout=60)
    reason = failure(dead_letter)
    assert reason["failure_code"] == "PROVIDER_UNAVAILABLE", reason
    assert "503" in reason["failure_reason"], reason
    assert reason["receive_count"] == "2"
    assert [call["response_status"] for call in create_requests_for(simulator, key)] == [503, 503]
    # And its task waits, unfinished, not lost
    (task,) = stack.tasks_for(key)
    assert task["status"] == "RECEIVED"

    # When the dead letter is redriven once the provider is back
    redrive(stack, dead_letter, stack.uploads_queue_url)

    # Then the same task succeeds, with one more create call and one notification
    finished = stack.wait_for_task(key, timeout=60)
    assert finished["task_id"] == task["task_id"]
    assert finished["status"] == "SUCCEEDED", finished.get("error")
    assert [call["response_status"] for call in create_requests_for(simulator, key)] == [503, 503, 200]
    assert len(settled_notifications(stack, finished["task_id"])) == 1
