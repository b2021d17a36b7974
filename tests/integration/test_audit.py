"""The upload audit on the local stack: the AuditFunction, invoked as its schedule would,
finds an upload whose S3 event was lost and repairs it into a SUCCEEDED task with its
video, reports a succeeded task whose video is gone, and re-publishes a pending
notification; its next run finds nothing again."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from i2v.tasks.store import TaskStore
from local.lambda_runtime import LocalFunction
from local.moto_server import MOTO_ACCOUNT_ID
from local.schedule import scheduled_event
from local.stack import LocalStack
from tests.integration.helpers import finished_and_notified, png, unique_key, upload_without_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The stack's AuditGraceSeconds, shortened (the parameter's floor is 300 s): uploads older
# than this are audited.
GRACE_SECONDS = 2


@pytest.fixture(scope="module")
def function_log() -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(prefix="i2v-audit-functions-", suffix=".log") as log:
        yield Path(log.name)


@pytest.fixture(scope="module")
def stack(function_log: Path) -> Iterator[LocalStack]:
    """A stack of its own: the test turns the bucket's notifications off for one upload."""
    with (
        function_log.open("ab") as log_stream,
        LocalStack(
            function_log=log_stream,
            environment={"AUDIT_GRACE_SECONDS": str(GRACE_SECONDS)},
            simulator_options={"render_max_long_side": 320, "progress_delay": 0.1},
        ) as local_stack,
    ):
        yield local_stack


def run_audit(stack: LocalStack) -> dict[str, Any]:
    """What EventBridge's schedule does: invoke the function with a scheduled event."""
    function: LocalFunction = stack.functions["AuditFunction"]
    event = scheduled_event(
        rule_arn=f"arn:aws:events:{stack.region}:{MOTO_ACCOUNT_ID}:rule/audit",
        region=stack.region,
        account_id=MOTO_ACCOUNT_ID,
    )
    report: dict[str, Any] = function.invoke(event)
    return report


def emitted(function_log: Path, metric: str) -> list[float]:
    """The values of `metric` in the functions' EMF lines."""
    values: list[float] = []
    for line in function_log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and f'"{metric}"' in line:
            value = json.loads(line)[metric]
            values.extend(value if isinstance(value, list) else [value])
    return values


def test_the_audit_repairs_a_lost_upload_reports_a_missing_video_and_renotifies(
    stack: LocalStack, function_log: Path
) -> None:
    # Given an upload that went through, whose video was then deleted and whose
    # notification is marked pending (a publish that failed)
    done_key = unique_key(stack, "audited")
    stack.upload(png(), done_key, {"duration": "3"})
    done = finished_and_notified(stack, done_key)
    assert done["status"] == "SUCCEEDED", done.get("error")
    stack.s3.delete_object(Bucket=stack.bucket, Key=done["video"]["key"])
    TaskStore(stack.dynamodb, stack.table).reopen_for_notification(
        done["task_id"], now=time.time() - GRACE_SECONDS
    )

    # And an upload whose S3 event was lost: no task appears for it
    lost_key = unique_key(stack, "lost event")
    upload_without_event(stack, lost_key)
    stack.wait_until_idle()
    assert stack.tasks_for(lost_key) == []
    time.sleep(GRACE_SECONDS + 1)

    # When the audit runs
    report = run_audit(stack)

    # Then it found one of each, and repaired what it safely could
    assert report["counts"] == {"uploads_without_task": 1, "tasks_without_video": 1, "unnotified": 1}
    assert report["repaired"] == {"uploads_without_task": 1, "tasks_without_video": 0, "unnotified": 1}
    [lost] = report["uploads_without_task"]
    assert (lost["key"], lost["repaired"]) == (lost_key, True)
    [missing] = report["tasks_without_video"]
    assert (missing["task_id"], missing["video_key"]) == (done["task_id"], done["video"]["key"])
    assert report["complete"] and report["watermark"] == "advanced"

    # And the lost upload went the normal way to a SUCCEEDED task, with the id the audit named
    repaired = finished_and_notified(stack, lost_key)
    assert repaired["status"] == "SUCCEEDED", repaired.get("error")
    assert repaired["task_id"] == lost["task_id"]
    video = stack.s3.head_object(Bucket=stack.bucket, Key=repaired["video"]["key"])
    assert video["ContentLength"] == repaired["video"]["size"] > 0

    # And the pending notification went out again, the same event, and is no longer pending
    announced = stack.notifications(done["task_id"])
    assert len(announced) == 2
    assert announced[0].message["event_id"] == announced[1].message["event_id"]
    assert "notify_pending" not in (stack.task(done["task_id"]) or {})

    # And the function reported its figures as metrics
    assert emitted(function_log, "AuditUploadsWithoutTask") == [1.0]
    assert emitted(function_log, "AuditTasksWithoutVideo") == [1.0]
    assert emitted(function_log, "AuditUnnotified") == [1.0]

    # When the audit runs again
    again = run_audit(stack)

    # Then nothing is found or repaired twice: the watermark is past those uploads
    assert again["counts"] == {"uploads_without_task": 0, "tasks_without_video": 0, "unnotified": 0}
    assert again["checked"] == 0 and again["skipped"]["before_window"] == 2
    assert len(stack.tasks_for(lost_key)) == 1
