"""Tail: the topic's notifications as they arrive, through a temporary SQS queue subscribed
to it (SNS keeps no history to read; a queue holds what arrives between two polls).
The queue and its subscription are deleted on exit, Ctrl-C included."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from i2v_cli.aws import Aws, aws_errors

# Short long-polls, so that --seconds and Ctrl-C are answered within this.
POLL_WAIT_SECONDS = 2
# A temporary queue keeps what arrives for an hour at most: it is deleted on exit anyway.
RETENTION_SECONDS = 3600


@contextmanager
def subscribed(aws: Aws, events: Sequence[str] = ()) -> Iterator[str]:
    """A fresh queue on the topic (SNS envelopes, so the message attributes come too)."""
    name = f"i2v-tail-{secrets.token_hex(6)}"
    with aws_errors():
        queue_url = aws.sqs.create_queue(
            QueueName=name, Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)}
        )["QueueUrl"]
    subscription_arn: str | None = None
    try:
        with aws_errors():
            queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            aws.sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"Policy": json.dumps(_policy(queue_arn, aws.stack.topic_arn))}
            )
            attributes = {"RawMessageDelivery": "false"}
            if events:
                attributes["FilterPolicy"] = json.dumps({"event_type": list(events)})
            subscription_arn = aws.sns.subscribe(
                TopicArn=aws.stack.topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
        yield queue_url
    finally:
        with aws_errors():
            if subscription_arn:
                aws.sns.unsubscribe(SubscriptionArn=subscription_arn)
            aws.sqs.delete_queue(QueueUrl=queue_url)


def _policy(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


def notification(envelope: dict[str, Any]) -> dict[str, Any]:
    """One SNS envelope as the CLI prints it (stable keys)."""
    try:
        message: Any = json.loads(envelope.get("Message", ""))
    except json.JSONDecodeError:
        message = envelope.get("Message")
    return {
        "message_id": envelope.get("MessageId"),
        "timestamp": envelope.get("Timestamp"),
        "subject": envelope.get("Subject"),
        "attributes": {k: v.get("Value") for k, v in (envelope.get("MessageAttributes") or {}).items()},
        "message": message,
    }


def follow(
    aws: Aws,
    queue_url: str,
    *,
    count: int | None,
    seconds: float | None,
    received: Callable[[dict[str, Any]], object],
) -> int:
    """Hand each notification to `received` until `count` arrived or `seconds` passed."""
    deadline = None if seconds is None else time.monotonic() + seconds
    seen = 0
    while count is None or seen < count:
        wait = POLL_WAIT_SECONDS
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = max(0, min(wait, int(remaining)))
        with aws_errors():
            batch = 10 if count is None else min(10, count - seen)
            messages = aws.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=batch, WaitTimeSeconds=wait
            ).get("Messages", [])
            for message in messages:
                received(notification(json.loads(message["Body"])))
                aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                seen += 1
    return seen
