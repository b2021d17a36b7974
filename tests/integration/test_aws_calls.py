"""What one upload costs in AWS calls, counted from botocore's event hooks inside the
functions' processes (local/lambda_worker.py): a change that adds a call fails here.

The stack runs with the default DailyBudgetUsd 0: the budget guard makes no call. With a
cap it is one more UpdateItem per submission, on the day's counter (decision 39); the
provider attempts ride on the writes counted here (decision 41)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from local.stack import LocalStack
from tests.integration.helpers import finished_and_notified, png, unique_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def dynamodb_calls(stack: LocalStack, task_id: str, functions: tuple[str, ...]) -> Counter[str]:
    calls: list[dict[str, Any]] = stack.aws_calls()
    return Counter(
        call["operation"]
        for call in calls
        if call["service"] == "dynamodb"
        and call["task_id"] == task_id
        and any(name in call["function"] for name in functions)
    )


def test_the_happy_path_costs_four_writes_and_no_read_plus_one_per_intermediate_status(
    stack: LocalStack,
) -> None:
    # Given an upload that goes through submission, one progress webhook and completion
    key = unique_key(stack, "call count")
    stack.upload(png(), key, {"duration": "3"})
    task = finished_and_notified(stack, key)
    assert task["status"] == "SUCCEEDED"

    # When its DynamoDB calls on the pipeline's path are counted
    calls = dynamodb_calls(stack, task["task_id"], ("SubmitFunction", "CallbackFunction"))

    # Then there is no read, and the writes are: the claim (token included), the provider's
    # id, RUNNING (the one intermediate status), FINALIZING (authenticated in the write), the end
    assert not READS & set(calls), calls
    intermediate = 1 if "running_at" in task else 0
    # A progress webhook that beats the submit step's write makes that write refused and
    # repeated without the status (i2v/tasks/store.py, mark_submitted): one more, explained.
    raced = int(intermediate == 1 and task["running_at"] < task["submitted_at"])
    assert calls == Counter({"PutItem": 1, "UpdateItem": 3 + intermediate + raced}), calls
    assert sum(calls.values()) == 4 + intermediate + raced


def test_a_forged_callback_costs_no_table_call(stack: LocalStack) -> None:
    import httpx

    # Given a finished task
    key = unique_key(stack, "forged")
    stack.upload(png(), key, {"duration": "3"})
    task = finished_and_notified(stack, key)
    before = dynamodb_calls(stack, task["task_id"], ("CallbackFunction",))

    # When a callback with a wrong signature arrives for it
    answer = httpx.post(
        f"{stack.gateway.url}/callbacks/magnific/{task['task_id']}?token=guess",
        content=b'{"task_id": "x", "status": "COMPLETED", "generated": []}',
        headers={"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
    )

    # Then it is refused before the table is touched
    assert answer.status_code == 401
    assert dynamodb_calls(stack, task["task_id"], ("CallbackFunction",)) == before
