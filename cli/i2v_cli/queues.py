"""Redrive: each dead-letter queue's messages back to the queue they came from.

One message at a time, sent back before it is deleted: a crash duplicates a message, never
loses one, and the handlers are idempotent. SQS's StartMessageMoveTask would do the same
server-side, but the local stack's moto does not implement it, and one path that runs
everywhere is the one that is tested (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from i2v_cli.aws import Aws, aws_errors
from i2v_cli.errors import CliError

DEAD_LETTER_QUEUES = ("uploads", "finalize", "poll")
# Long enough to send every message of a batch back before any is seen again.
RECEIVE_VISIBILITY_SECONDS = 120
# A long poll asks every SQS server: an empty answer means an empty queue, not a miss.
RECEIVE_WAIT_SECONDS = 1


@dataclass(frozen=True)
class Redriven:
    queue: str
    dead_letter_queue_url: str
    source_queue_url: str
    waiting: int
    """Messages the dead-letter queue held (SQS's approximate count) before the move."""
    moved: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def redrive(
    aws: Aws,
    queues: Sequence[str] = DEAD_LETTER_QUEUES,
    *,
    dry_run: bool = False,
) -> list[Redriven]:
    unknown = sorted(set(queues) - set(DEAD_LETTER_QUEUES))
    if unknown:
        raise CliError(f"no dead-letter queue {unknown}: choose from {', '.join(DEAD_LETTER_QUEUES)}")
    pairs = aws.stack.dead_letter_queues()
    done = []
    for name in queues:
        dead_letter_url, source_url = pairs[name]
        waiting = _waiting(aws, dead_letter_url)
        moved = 0 if dry_run else _move(aws, dead_letter_url, source_url)
        done.append(Redriven(name, dead_letter_url, source_url, waiting, moved))
    return done


def _waiting(aws: Aws, queue_url: str) -> int:
    with aws_errors():
        attributes = aws.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _move(aws: Aws, dead_letter_url: str, source_url: str) -> int:
    from i2v.redelivery import FAILURE_ATTRIBUTES

    moved = 0
    with aws_errors():
        while True:
            messages = aws.sqs.receive_message(
                QueueUrl=dead_letter_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return moved
            for message in messages:
                # The reason it was dead-lettered stays behind: a new failure brings its own.
                attributes = {
                    name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
                    for name, value in message.get("MessageAttributes", {}).items()
                    if name not in FAILURE_ATTRIBUTES
                }
                extra = {"MessageAttributes": attributes} if attributes else {}
                aws.sqs.send_message(QueueUrl=source_url, MessageBody=message["Body"], **extra)
                aws.sqs.delete_message(QueueUrl=dead_letter_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1
