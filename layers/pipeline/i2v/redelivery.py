"""Work that must wait goes back to its queue: the message's next delivery is pushed out
by a capped exponential backoff with full jitter, never sooner than a Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from i2v.errors import RetryLater
from i2v.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


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


@contextmanager
def retried(record: SQSRecord, redelivery: Callable[[], Redelivery]) -> Iterator[None]:
    """A queue record's work: a RetryLater pushes its next delivery out by the backoff, and
    any failure is logged and raised again, so the record is reported failed."""
    try:
        yield
    except RetryLater as exc:
        redelivery().later(record, exc)
        raise
    except Exception:
        logger.exception("record failed; it will be delivered again")
        raise


def attempt_of(record: SQSRecord) -> int:
    """Which delivery of its message the record is (1 = the first)."""
    return int(record.attributes.approximate_receive_count or 1)
