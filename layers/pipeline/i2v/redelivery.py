"""Work that must wait goes back to its queue: the message's next delivery is pushed out
by a capped exponential backoff with full jitter, never sooner than a Retry-After.

A poison message (one that can never be read, or that failed its last allowed delivery)
is sent to its queue's dead-letter queue by the handler itself, with its reason as
message attributes, then acknowledged (docs/decisions.md, 31)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from i2v.errors import PipelineError, RetryLater
from i2v.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

# The message attributes a dead-lettered message carries (SQS allows 10 in all).
FAILURE_ATTRIBUTES = (
    "failure_code",
    "failure_reason",
    "failed_queue",
    "failed_message_id",
    "receive_count",
    "failed_at",
)
REASON_MAX_CHARS = 1000
_URL_QUERY = re.compile(r"([a-z][a-z0-9+.-]*://[^\s?#'\"]+)\?[^\s#'\"]*", re.IGNORECASE)


class UnreadableMessage(PipelineError):
    """A queue message whose body is not what its queue carries: no retry can help."""

    code = "UNREADABLE_MESSAGE"


@dataclass(frozen=True)
class DeadLetter:
    """Where a queue's poison messages go, from its RedrivePolicy."""

    queue_url: str
    max_receive_count: int


def backoff_seconds(attempt: int, *, base: float, cap: float, retry_after: float | None) -> int:
    """Seconds before the next try of delivery `attempt` (1 = the first)."""
    backoff = min(cap, base * 2 ** max(0, attempt - 1))
    delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
    if retry_after is not None:
        delay = max(delay, retry_after)
    return int(min(cap, max(1.0, delay)))


@dataclass(frozen=True)
class Redelivery:
    """One queue's retry policy. SQS visibility is the durable timer: a message whose
    record is reported failed comes back when its visibility timeout, set here, ends."""

    sqs: Any
    queue_url: str
    base_seconds: float
    max_seconds: float

    def later(self, record: SQSRecord, error: RetryLater) -> int:
        """Push the record's next delivery out by its backoff; the seconds it will wait."""
        attempt = attempt_of(record)
        delay = backoff_seconds(
            attempt, base=self.base_seconds, cap=self.max_seconds, retry_after=error.retry_after
        )
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay
        )
        logger.warning(
            "retrying later",
            extra={"code": error.code, "reason": error.message, "attempt": attempt, "delay_seconds": delay},
        )
        return delay

    def dead_letter(self) -> DeadLetter | None:
        """The queue's dead-letter queue and its maxReceiveCount, read from the queue itself
        (one call, on failure paths only), so the template's RedrivePolicy is the one truth.
        None when the queue has none or it cannot be read now."""
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
            )
            policy = json.loads(attributes["Attributes"]["RedrivePolicy"])
        except Exception as exc:  # without it, SQS's own redrive still applies
            logger.warning("no dead-letter queue found", extra={"error": type(exc).__name__})
            return None
        # A dead-letter queue is in the queue's account and region: its URL differs by name.
        name = str(policy["deadLetterTargetArn"]).rsplit(":", 1)[1]
        return DeadLetter(f"{self.queue_url.rsplit('/', 1)[0]}/{name}", int(policy["maxReceiveCount"]))

    def is_last_delivery(self, record: SQSRecord, dead_letter: DeadLetter) -> bool:
        """SQS moves a message received more than maxReceiveCount times: this is the last."""
        return attempt_of(record) >= dead_letter.max_receive_count

    def send_to_dead_letter(self, record: SQSRecord, dead_letter: DeadLetter, code: str, reason: str) -> None:
        """A copy of the message, its own attributes kept and the failure's added."""
        attributes = {
            name: _sendable(value)
            for name, value in (record.raw_event.get("messageAttributes") or {}).items()
            if name not in FAILURE_ATTRIBUTES
        }
        failure = {
            "failure_code": code,
            "failure_reason": reason[:REASON_MAX_CHARS] or "-",
            "failed_queue": record.event_source_arn or self.queue_url,
            "failed_message_id": record.message_id,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        attributes |= {name: {"DataType": "String", "StringValue": value} for name, value in failure.items()}
        attributes["receive_count"] = {"DataType": "Number", "StringValue": str(attempt_of(record))}
        self.sqs.send_message(
            QueueUrl=dead_letter.queue_url, MessageBody=record.body, MessageAttributes=attributes
        )
        logger.error(
            "message sent to its dead-letter queue",
            extra={"code": code, "reason": reason[:REASON_MAX_CHARS], "attempt": attempt_of(record)},
        )

    def give_up(self, record: SQSRecord, error: Exception, *, poison: bool) -> bool:
        """Send the record to its dead-letter queue when no delivery can help: it is
        unreadable (`poison`) or this was its last. True when it was sent (acknowledge it)."""
        dead_letter = self.dead_letter()
        if dead_letter is None or not (poison or self.is_last_delivery(record, dead_letter)):
            return False
        code = error.code if isinstance(error, PipelineError) else "INTERNAL_ERROR"
        reason = error.message if isinstance(error, PipelineError) else f"{type(error).__name__}: {error}"
        # A URL's query may hold a signature or a token: the reason keeps its path only.
        reason = _URL_QUERY.sub(r"\1?...", reason)
        try:
            self.send_to_dead_letter(record, dead_letter, code, reason)
        except Exception:
            # Not acknowledged: SQS's own redrive moves it after its last delivery.
            logger.exception("sending to the dead-letter queue failed; the message stays")
            return False
        return True


@contextmanager
def retried(record: SQSRecord, redelivery: Callable[[], Redelivery]) -> Iterator[None]:
    """A queue record's work: a RetryLater pushes its next delivery out by the backoff, and
    any failure is logged and raised again, so the record is reported failed. An unreadable
    record, or a failure on its last delivery, is sent to the dead-letter queue with its
    reason instead, and the record acknowledged."""
    try:
        yield
    except UnreadableMessage as exc:
        if not redelivery().give_up(record, exc, poison=True):
            raise
    except RetryLater as exc:
        policy = redelivery()
        if not policy.give_up(record, exc, poison=False):
            policy.later(record, exc)
            raise
    except Exception as exc:
        if not redelivery().give_up(record, exc, poison=False):
            logger.exception("record failed; it will be delivered again")
            raise


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Reading a message's body: a failure there means no delivery of it can ever succeed.
    The reason names the fields at fault, never their values (a URL may carry a signature)."""
    from pydantic import ValidationError

    try:
        yield
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise UnreadableMessage(f"{what} is not valid: {fields}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableMessage(f"{what} cannot be read: {type(exc).__name__}: {exc}") from exc


def _sendable(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as Lambda's event gives it, as SendMessage takes it."""
    import base64

    data_type = str(value["dataType"])
    if data_type.startswith("Binary"):
        return {"DataType": data_type, "BinaryValue": base64.b64decode(value["binaryValue"])}
    return {"DataType": data_type, "StringValue": str(value["stringValue"])}


def attempt_of(record: SQSRecord) -> int:
    """Which delivery of its message the record is (1 = the first)."""
    return int(record.attributes.approximate_receive_count or 1)
