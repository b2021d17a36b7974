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


def wait_until_ended(stack: LocalStack, count: int, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """The tasks once `count` of them ended (or at the timeout), and when that was."""
    started = time.monotonic()
    while True:
        tasks = scan_tasks(stack)
        ended = sum(1 for task in tasks if task["status"] in TERMINAL)
        if ended >= count or time.monotonic() - started > timeout:
            return tasks, time.monotonic() - started
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
