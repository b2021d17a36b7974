"""What the burst and aws_calls sections share: a local stack tuned for many uploads,
a test image, parallel uploads, and waiting for the tasks to end."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from local.stack import LocalStack, LocalStackError

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
UPLOAD_THREADS = 8


def sample_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 360), (30, 144, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def local_stack(log_dir: Path, *, aws_call_log: Path | None = None) -> Iterator[LocalStack]:
    """The stack with its template defaults (reconciler every 5 min, after 10 min), small
    renders so the provider's work does not dominate, and the functions' logs in a file."""
    with (
        (log_dir / "functions.log").open("ab") as log,
        LocalStack(
            function_log=log,
            aws_call_log=aws_call_log,
            simulator_options={"render_max_long_side": 64, "progress_delay": 0.2, "render_workers": 2},
        ) as stack,
    ):
        yield stack


def upload_all(stack: LocalStack, keys: list[str], body: bytes) -> float:
    """PUT every key as fast as the uploader threads go; returns the seconds it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda key: stack.upload(body, key, {"duration": "3", "resolution": "720P"}), keys))
    return time.monotonic() - started


def scan_tasks(stack: LocalStack) -> list[dict[str, Any]]:
    deserializer = TypeDeserializer()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.table, "ConsistentRead": True}
    while True:
        page = stack.dynamodb.scan(**kwargs)
        items += [{k: deserializer.deserialize(v) for k, v in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# A Scan of the whole table while the burst runs is the observer loading what it observes:
# at 1,000 tasks one took about 2 s of moto's CPU, and the wait used to scan every 2 s.
FALLBACK_SCAN_SECONDS = 30.0


def wait_until_ended(stack: LocalStack, count: int, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """The tasks once `count` of them ended (or at the timeout), and when that was.

    Progress is read from the notifications (one per ended task, drained from the stack's
    tap queue ten at a time); the table is scanned to confirm, and every
    FALLBACK_SCAN_SECONDS in case a notification is late or lost."""
    started = time.monotonic()
    last_scan = started
    while True:
        notified = {n.task_id for n in stack.notifications() if n.message.get("status") in TERMINAL}
        now = time.monotonic()
        if len(notified) >= count or now - last_scan >= FALLBACK_SCAN_SECONDS or now - started > timeout:
            tasks = scan_tasks(stack)
            last_scan = time.monotonic()
            ended = sum(1 for task in tasks if task["status"] in TERMINAL)
            if ended >= count or last_scan - started > timeout:
                return tasks, now - started
        time.sleep(2.0)


def statuses(tasks: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(task["status"]) for task in tasks))


def settle(stack: LocalStack, timeout: float = 60.0) -> bool:
    """Wait for the queues to empty, so late duplicates would have arrived; False if they
    did not in `timeout` (a message pushed out by a retry's backoff, on a busy machine)."""
    try:
        stack.wait_until_idle(timeout=timeout)
    except LocalStackError:
        return False
    return True
