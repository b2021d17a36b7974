"""The daily budget on the local stack: an upload over the cap rejected, and one deferred
that comes back through the reconciler and the uploads queue once its day has turned.

The stack's functions get a cap and a Magnific price for these tests only (as a stack
update would), and have their defaults back after. The day's turn is what it changes in
the table: the task's `deferred_until` passes and a new day's counter is empty; the test
writes exactly that, and everything after it is the stack's own path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from local.stack import LocalStack
from tests.integration.helpers import finished_and_notified, png, unique_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# 1080P (the stack's default), 3 s at $0.30/s: $0.90 a task; a $1.00 cap takes one.
PRICED = {"DAILY_BUDGET_USD": "1", "ROUTE_SETTINGS": "MAGNIFIC_PRICE_1080P=0.3"}


def counter_key() -> dict[str, dict[str, str]]:
    return {"task_id": {"S": f"budget#{datetime.now(UTC).date().isoformat()}"}}


@pytest.fixture
def budgeted(stack: LocalStack) -> Iterator[LocalStack]:
    submit = stack.functions["SubmitFunction"].config.environment
    defaults = {name: submit.get(name, "") for name in ("ROUTE_SETTINGS", "OVER_BUDGET_ACTION")}
    stack.dynamodb.delete_item(TableName=stack.table, Key=counter_key())
    try:
        yield stack
    finally:
        stack.update_environment({"DAILY_BUDGET_USD": "0", **defaults})
        stack.dynamodb.delete_item(TableName=stack.table, Key=counter_key())


def spent_today(stack: LocalStack) -> float:
    item = stack.dynamodb.get_item(TableName=stack.table, Key=counter_key(), ConsistentRead=True).get("Item")
    return float(item["spent"]["N"]) if item else 0.0


def test_an_upload_over_the_cap_is_rejected_with_the_figures(budgeted: LocalStack) -> None:
    stack = budgeted
    stack.update_environment({**PRICED, "OVER_BUDGET_ACTION": "reject"})
    # Given a first upload that takes $0.90 of the $1.00 cap
    first = unique_key(stack, "within budget")
    stack.upload(png(), first, {"duration": "3"})
    done = finished_and_notified(stack, first)
    assert (done["status"], done["estimated_cost_usd"]) == ("SUCCEEDED", 0.9)
    assert [a["outcome"] for a in done["attempts"]] == ["accepted"]

    # When a second one comes the same day
    second = unique_key(stack, "over budget")
    stack.upload(png(), second, {"duration": "3"})
    rejected = finished_and_notified(stack, second)

    # Then it is rejected before any provider call, and its notification says why and what it would cost
    assert rejected["status"] == "REJECTED" and rejected["error"]["code"] == "BUDGET_EXCEEDED"
    assert "the daily budget of $1.00" in rejected["error"]["message"]
    assert "$0.90 is already reserved today and its estimate is $0.90" in rejected["error"]["message"]
    assert "attempts" not in rejected or rejected["attempts"] == []
    [message] = [n.message for n in stack.notifications(rejected["task_id"])]
    assert (message["event_type"], message["estimated_cost_usd"]) == ("video.rejected", 0.9)
    assert spent_today(stack) == 0.9


def test_a_deferred_upload_comes_back_by_itself_when_its_day_turns(budgeted: LocalStack) -> None:
    stack = budgeted
    stack.update_environment({**PRICED, "OVER_BUDGET_ACTION": "wait"})
    first = unique_key(stack, "spends the day")
    stack.upload(png(), first, {"duration": "3"})
    assert finished_and_notified(stack, first)["status"] == "SUCCEEDED"

    # Given a second upload the day's budget cannot take: it waits, and says so
    second = unique_key(stack, "waits a day")
    stack.upload(png(), second, {"duration": "3"})
    deferred = stack.wait_for_task(second, statuses=("DEFERRED",), timeout=30)
    notice = stack.wait_for_notification(deferred["task_id"], timeout=30).message
    assert (notice["event_type"], notice["status"], notice["estimated_cost_usd"]) == (
        "video.deferred",
        "DEFERRED",
        0.9,
    )
    midnight = datetime.fromtimestamp(deferred["received_at"], UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert deferred["deferred_until"] == midnight.timestamp() + 86_400

    # When its day turns: its wait is over, and the new day's counter is empty
    past = time.time() - 60
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"task_id": {"S": deferred["task_id"]}},
        UpdateExpression="SET deferred_until = :past, open_since = :past",
        ExpressionAttributeValues={":past": {"N": repr(past)}},
    )
    stack.dynamodb.delete_item(TableName=stack.table, Key=counter_key())

    # Then the reconciler sends it back, and it is submitted and finished like any upload
    done = stack.wait_for_task(second, timeout=60)
    assert done["status"] == "SUCCEEDED" and done["resumed_at"] > deferred["updated_at"]
    assert [a["outcome"] for a in done["attempts"]] == ["accepted"]
    deadline = time.monotonic() + 30
    while "video.succeeded" not in (
        events := [n.message["event_type"] for n in stack.notifications(done["task_id"])]
    ):
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert events == ["video.deferred", "video.succeeded"]
    assert spent_today(stack) == 0.9
