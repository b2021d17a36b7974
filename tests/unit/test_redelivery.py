"""A queue record's failure: retried, or sent to the dead-letter queue with its reason, on
moto's SQS in-process with real receive counts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel

from i2v.errors import ProviderUnavailable
from i2v.redelivery import Redelivery, UnreadableMessage, reading, retried
from tests.unit.conftest import Aws


class Order(BaseModel):
    task_id: str
    attempts: int


def queues(aws: Aws, max_receive_count: int | None) -> tuple[Redelivery, str]:
    dead_letter_url = aws.sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": max_receive_count}
    attributes = {"RedrivePolicy": json.dumps(policy)} if max_receive_count else {}
    url = aws.sqs.create_queue(QueueName="work", Attributes=attributes)["QueueUrl"]
    return Redelivery(aws.sqs, url, base_seconds=1, max_seconds=5), dead_letter_url


def delivery(aws: Aws, url: str, times: int) -> SQSRecord:
    """The message's `times`-th delivery, shaped as Lambda hands it over."""
    for _ in range(times):
        (message,) = aws.sqs.receive_message(
            QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"], VisibilityTimeout=0
        )["Messages"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return SQSRecord(
        {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message["Attributes"],
            "messageAttributes": {
                name: lambda_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "eventSourceARN": arn,
        }
    )


def lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    if value["DataType"] == "Binary":
        return {"binaryValue": base64.b64encode(value["BinaryValue"]).decode(), "dataType": "Binary"}
    return {"stringValue": value["StringValue"], "dataType": value["DataType"]}


def dead_letters(aws: Aws, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return messages


def fail(record: SQSRecord, redelivery: Redelivery, error: Exception) -> None:
    with retried(record, lambda: redelivery):
        raise error


def test_a_failure_before_the_last_delivery_is_raised_and_nothing_is_dead_lettered(aws: Aws) -> None:
    # Given a message on its second of three allowed deliveries
    redelivery, dead_letter_url = queues(aws, max_receive_count=3)
    aws.sqs.send_message(QueueUrl=redelivery.queue_url, MessageBody="{}")
    record = delivery(aws, redelivery.queue_url, times=2)

    # When its work fails
    with pytest.raises(RuntimeError):
        fail(record, redelivery, RuntimeError("boom"))

    # Then the record is reported failed, for SQS to deliver again, and no dead letter exists
    assert dead_letters(aws, dead_letter_url) == []


def test_a_failure_on_the_last_delivery_is_dead_lettered_with_its_reason_and_attributes(aws: Aws) -> None:
    # Given a message with an attribute of its own, on its last allowed delivery
    redelivery, dead_letter_url = queues(aws, max_receive_count=3)
    aws.sqs.send_message(
        QueueUrl=redelivery.queue_url,
        MessageBody='{"task_id": "t-1"}',
        MessageAttributes={
            "origin": {"DataType": "String", "StringValue": "reconciler"},
            "digest": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    record = delivery(aws, redelivery.queue_url, times=3)

    # When its work fails with an error quoting a signed URL
    fail(record, redelivery, RuntimeError("GET https://v.example.com/a.mp4?X-Amz-Signature=s3cr3t failed"))

    # Then the record is acknowledged (nothing raised) and its copy carries the reason
    (dead,) = dead_letters(aws, dead_letter_url)
    attributes = {name: value.get("StringValue") for name, value in dead["MessageAttributes"].items()}
    assert dead["Body"] == '{"task_id": "t-1"}'
    assert dead["MessageAttributes"]["digest"]["BinaryValue"] == b"\x00\xff"
    assert attributes["origin"] == "reconciler"
    assert attributes["failure_code"] == "INTERNAL_ERROR"
    assert attributes["failure_reason"] == "RuntimeError: GET https://v.example.com/a.mp4?... failed"
    assert attributes["receive_count"] == "3"
    assert attributes["failed_message_id"] == record.message_id
    assert attributes["failed_queue"] == record.event_source_arn


def test_a_provider_outage_on_the_last_delivery_is_dead_lettered_not_delayed(aws: Aws) -> None:
    # Given a message allowed one delivery
    redelivery, dead_letter_url = queues(aws, max_receive_count=1)
    aws.sqs.send_message(QueueUrl=redelivery.queue_url, MessageBody="{}")
    record = delivery(aws, redelivery.queue_url, times=1)

    # When the provider is unavailable
    fail(record, redelivery, ProviderUnavailable("HTTP 503 from the provider", retry_after=30))

    # Then it is in the dead-letter queue with the error's own code and message
    (dead,) = dead_letters(aws, dead_letter_url)
    assert dead["MessageAttributes"]["failure_code"]["StringValue"] == "PROVIDER_UNAVAILABLE"
    assert dead["MessageAttributes"]["failure_reason"]["StringValue"] == "HTTP 503 from the provider"


def test_an_unreadable_message_is_dead_lettered_on_its_first_delivery(aws: Aws) -> None:
    # Given a first delivery of a body that is not an order, of many allowed
    redelivery, dead_letter_url = queues(aws, max_receive_count=10)
    aws.sqs.send_message(QueueUrl=redelivery.queue_url, MessageBody='{"task_id": "t-2", "attempts": "many"}')
    record = delivery(aws, redelivery.queue_url, times=1)

    # When it is read
    with retried(record, lambda: redelivery), reading("the order"):
        Order.model_validate_json(record.body)

    # Then it goes to the dead-letter queue at once, the reason naming the field, not its value
    (dead,) = dead_letters(aws, dead_letter_url)
    reason = dead["MessageAttributes"]["failure_reason"]["StringValue"]
    assert dead["MessageAttributes"]["failure_code"]["StringValue"] == "UNREADABLE_MESSAGE"
    assert reason.startswith("the order is not valid: attempts: ")
    assert "many" not in reason


def test_without_a_dead_letter_queue_a_failure_is_raised_as_before(aws: Aws) -> None:
    # Given a queue with no redrive policy
    redelivery, _ = queues(aws, max_receive_count=None)
    aws.sqs.send_message(QueueUrl=redelivery.queue_url, MessageBody="not json")
    record = delivery(aws, redelivery.queue_url, times=1)

    # When its message cannot be read, then the record is reported failed: nothing is dropped
    with (
        pytest.raises(UnreadableMessage, match="cannot be read: JSONDecodeError"),
        retried(record, lambda: redelivery),
        reading("the message"),
    ):
        json.loads(record.body)
