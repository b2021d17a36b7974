"""Feed an SQS queue to a function the way Lambda's SQS event source mapping does.

Batches of up to BatchSize messages, gathered for up to the batching window; at most
MaximumConcurrency invocations at once; the records the function reports in
`batchItemFailures` (or the whole batch, when it raises) stay in the queue and come
back after their visibility timeout; the others are deleted.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from local.lambda_runtime import FunctionError
from local.lambda_worker import SESSION_AWS_CALL_LOG, append_lines, call_line

log = logging.getLogger(__name__)

# SQS caps one ReceiveMessage at 10 messages and 20 s of long polling; 1 s keeps stop() quick.
RECEIVE_MAX_MESSAGES = 10
LONG_POLL_SECONDS = 1
RETRY_PAUSE_SECONDS = 1.0


class Invocable(Protocol):
    @property
    def name(self) -> str: ...

    def invoke(self, event: Any) -> Any: ...


@dataclass(frozen=True)
class SqsEventSource:
    """An SQS event of a function in the template, resolved."""

    queue_url: str
    queue_arn: str
    region: str
    batch_size: int = 10
    batching_window_seconds: float = 0.0
    maximum_concurrency: int = 2
    report_batch_item_failures: bool = False


def lambda_sqs_record(message: Mapping[str, Any], source: SqsEventSource) -> dict[str, Any]:
    """One ReceiveMessage message in the shape Lambda gives it to a function."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": source.queue_arn,
        "awsRegion": source.region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode()

    attribute: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [encoded(item) for item in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = encoded(value["BinaryValue"])
    return attribute


def failed_message_ids(result: Any, batch_ids: set[str]) -> set[str]:
    """The ids a partial batch response reports failed; all of them if it is malformed.

    Lambda treats the whole batch as failed when an itemIdentifier is missing, empty or
    not one of the batch's message ids.
    """
    if result is None:
        return set()
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return batch_ids
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            log.warning("malformed batchItemFailures: the whole batch counts as failed")
            return batch_ids
        failed.add(identifier)
    return failed


class SqsDispatcher:
    """One poller thread; one thread per batch in flight, at most MaximumConcurrency."""

    def __init__(self, sqs: Any, source: SqsEventSource, function: Invocable) -> None:
        self._sqs = sqs
        self._source = source
        self._function = function
        self._slots = threading.BoundedSemaphore(source.maximum_concurrency)
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._in_flight: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.max_in_flight = 0
        """The most batches that were in flight at once, for benchmarks."""
        # Lambda's event source mapping receives and deletes with the function's role: in a
        # test session these calls are recorded as the function's (local/lambda_worker.py).
        session_log = os.environ.get(SESSION_AWS_CALL_LOG)
        self._call_logs = [Path(session_log)] if session_log else []

    @property
    def queue_url(self) -> str:
        return self._source.queue_url

    @property
    def busy(self) -> bool:
        """Whether a batch is being received or processed right now."""
        with self._lock:
            return bool(self._in_flight)

    def start(self) -> None:
        self._stopping.clear()
        self._poller = threading.Thread(target=self._poll, name=f"sqs-{self._function.name}", daemon=True)
        self._poller.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving; wait up to `timeout` s for the batches in flight."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._poller is not None:
            self._poller.join(max(0.0, deadline - time.monotonic()))
            self._poller = None
        with self._lock:
            in_flight = list(self._in_flight)
        for worker in in_flight:
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in in_flight):
            log.warning("%s: a batch was still running at stop", self._function.name)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=LONG_POLL_SECONDS):
                continue
            try:
                batch = self._receive_batch()
            except Exception:
                log.exception("receiving from %s failed", self._source.queue_url)
                self._slots.release()
                self._stopping.wait(RETRY_PAUSE_SECONDS)
                continue
            if not batch:
                self._slots.release()
                continue
            worker = threading.Thread(
                target=self._process, args=(batch,), name=f"batch-{self._function.name}", daemon=True
            )
            with self._lock:
                self._in_flight.add(worker)
                self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
            worker.start()

    def _receive_batch(self) -> list[dict[str, Any]]:
        source = self._source
        messages: list[dict[str, Any]] = []
        window_ends: float | None = None
        while len(messages) < source.batch_size and not self._stopping.is_set():
            if window_ends is None:
                wait = LONG_POLL_SECONDS
            else:
                remaining = window_ends - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(LONG_POLL_SECONDS, int(remaining))
            received = self._sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=min(RECEIVE_MAX_MESSAGES, source.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            self._record("ReceiveMessage")
            messages.extend(received)
            if not messages:
                return []
            if window_ends is None:
                window_ends = time.monotonic() + source.batching_window_seconds
            if not received and wait == 0:
                self._stopping.wait(min(0.1, max(0.0, window_ends - time.monotonic())))
        return messages

    def _process(self, batch: list[dict[str, Any]]) -> None:
        try:
            self._invoke_and_settle(batch)
        except Exception:
            log.exception("%s: settling a batch failed", self._function.name)
        finally:
            with self._lock:
                self._in_flight.discard(threading.current_thread())
            self._slots.release()

    def _invoke_and_settle(self, batch: list[dict[str, Any]]) -> None:
        event = {"Records": [lambda_sqs_record(message, self._source) for message in batch]}
        try:
            result = self._function.invoke(event)
        except FunctionError as error:
            # Nothing is deleted: every message comes back after its visibility timeout.
            log.warning("%s failed a batch of %d: %s", self._function.name, len(batch), error)
            return
        batch_ids = {message["MessageId"] for message in batch}
        failed = failed_message_ids(result, batch_ids) if self._source.report_batch_item_failures else set()
        done = [message for message in batch if message["MessageId"] not in failed]
        for start in range(0, len(done), RECEIVE_MAX_MESSAGES):
            chunk = done[start : start + RECEIVE_MAX_MESSAGES]
            response = self._sqs.delete_message_batch(
                QueueUrl=self._source.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            self._record("DeleteMessageBatch")
            for failure in response.get("Failed", []):
                log.warning("deleting a message failed: %s", failure.get("Message"))

    def _record(self, operation: str) -> None:
        if not self._call_logs:
            return
        line = call_line(
            self._function.name,
            "sqs",
            operation,
            {"QueueUrl": self._source.queue_url},
            status=200,
            region=self._source.region,
            account=self._source.queue_arn.split(":")[4],
        )
        append_lines(self._call_logs, line | {"caller": "event source mapping"})
