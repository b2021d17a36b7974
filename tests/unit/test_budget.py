"""The daily budget's counter against moto's DynamoDB: below, at and above the cap, the
refund, the day's turn, and concurrent reservations at the edge."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from i2v.budget import Budget, BudgetConfig, OverBudget, day_of
from i2v.tasks.store import OPEN_INDEX
from tests.support.aws import create_tasks_table, serial_moto_server

# 2026-12-01 23:00:00 UTC
NOW = datetime(2026, 12, 1, 23, tzinfo=UTC).timestamp()


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tasks_table(client)
        yield client


def budget(dynamodb: Any, cap: float, over_budget: str = "wait") -> Budget:
    return Budget(dynamodb, "tasks", BudgetConfig(daily_usd=cap, over_budget=over_budget))  # type: ignore[arg-type]


def test_below_and_at_the_cap_reservations_are_counted_exactly(dynamodb: Any) -> None:
    # Given a cap of $2.10 and tasks of $0.70 (720P, 5 s at $0.14/s)
    guard = budget(dynamodb, 2.10)
    # When three are reserved, the last one reaching the cap exactly
    spent = [guard.reserve(0.7, now=NOW + i) for i in range(3)]
    # Then each sees the counter after its own reservation, with no float drift
    assert [r.spent_usd for r in spent if r] == [0.7, 1.4, 2.1]
    assert guard.spent("2026-12-01") == 2.1


def test_above_the_cap_the_reservation_is_refused_and_says_why(dynamodb: Any) -> None:
    guard = budget(dynamodb, 2.10)
    guard.reserve(1.4, now=NOW)
    # When a $0.75 task would take the day to $2.15
    with pytest.raises(OverBudget) as refused:
        guard.reserve(0.75, now=NOW)
    # Then nothing is added, and the message names the cap, the spend, the estimate and the reset
    assert guard.spent("2026-12-01") == 1.4
    assert refused.value.code == "BUDGET_EXCEEDED"
    assert refused.value.message == (
        "the daily budget of $2.10 (UTC day 2026-12-01) cannot take this task: $1.40 is already"
        " reserved today and its estimate is $0.75; the budget resets at 2026-12-02T00:00:00Z"
    )
    # A smaller task still fits
    fitted = guard.reserve(0.7, now=NOW)
    assert fitted is not None and fitted.spent_usd == 2.1


def test_a_task_dearer_than_the_whole_cap_is_refused_without_a_call(dynamodb: Any) -> None:
    guard = budget(dynamodb, 1.0)
    with pytest.raises(OverBudget, match=r"its estimate is \$2.80; "):
        guard.reserve(2.8, now=NOW)
    assert dynamodb.scan(TableName="tasks")["Items"] == []


def test_a_refund_gives_the_reservation_back_on_its_own_day(dynamodb: Any) -> None:
    guard = budget(dynamodb, 1.4)
    first = guard.reserve(0.7, now=NOW)
    guard.reserve(0.7, now=NOW)
    # When the first is given back after midnight (the provider refused it late)
    guard.refund(first)
    # Then the day it was reserved on has room again, and the new day is untouched
    assert guard.spent("2026-12-01") == 0.7
    assert guard.spent("2026-12-02") == 0.0
    assert guard.reserve(0.7, now=NOW) is not None


def test_each_utc_day_has_its_own_counter_which_expires_and_is_on_no_index(dynamodb: Any) -> None:
    guard = budget(dynamodb, 0.7)
    guard.reserve(0.7, now=NOW)
    with pytest.raises(OverBudget):
        guard.reserve(0.7, now=NOW + 3599)  # 23:59:59
    assert guard.reserve(0.7, now=NOW + 3600) is not None  # 00:00:00 the next day
    items = {i["task_id"]["S"]: i for i in dynamodb.scan(TableName="tasks")["Items"]}
    assert set(items) == {"budget#2026-12-01", "budget#2026-12-02"}
    # Kept 35 days after its day, then DynamoDB's TTL removes it
    assert int(items["budget#2026-12-01"]["expires_at"]["N"]) == int(NOW + 3600) + 35 * 86_400
    # Neither the open-tasks nor the by-source index sees it
    for index in (OPEN_INDEX, "by-source"):
        assert dynamodb.scan(TableName="tasks", IndexName=index)["Items"] == []


def test_no_cap_and_no_estimate_make_no_call(dynamodb: Any) -> None:
    assert budget(dynamodb, 0).reserve(0.7, now=NOW) is None
    assert budget(dynamodb, 5).reserve(None, now=NOW) is None  # a route with no price
    budget(dynamodb, 5).refund(None)
    assert dynamodb.scan(TableName="tasks")["Items"] == []


def test_day_of_is_the_utc_day_and_its_end() -> None:
    day, resets = day_of(NOW)
    assert (day, resets.isoformat()) == ("2026-12-01", "2026-12-02T00:00:00+00:00")


@pytest.fixture(scope="module")
def serial_dynamodb() -> Iterator[str]:
    with serial_moto_server() as endpoint:
        yield endpoint


@pytest.mark.parametrize("run", range(5))
def test_concurrent_submissions_at_the_edge_never_overshoot(serial_dynamodb: str, run: int) -> None:
    def client() -> Any:
        return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=serial_dynamodb)

    # Given a cap that fits exactly 7 tasks of $0.70, and on odd runs a counter already one
    # task in (so the edge falls elsewhere), a fresh table each run
    table = f"tasks-{run}"
    create_tasks_table(client(), table)
    cap = 4.9
    guard = Budget(client(), table, BudgetConfig(daily_usd=cap))
    already = 0.7 * (run % 2)
    if already:
        guard.reserve(already, now=NOW)
    fits = round((cap - already) / 0.7)
    # When 20 submissions, each with its own client, reserve at once
    start = threading.Barrier(20)
    reserved: list[float] = []
    refused: list[OverBudget] = []
    lock = threading.Lock()

    def submit() -> None:
        mine = Budget(client(), table, guard.config)
        start.wait()
        try:
            reservation = mine.reserve(0.7, now=NOW)
        except OverBudget as exc:
            with lock:
                refused.append(exc)
            return
        assert reservation is not None
        with lock:
            reserved.append(reservation.spent_usd)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly the tasks that fit were reserved, each saw a distinct counter, and the
    # day's spend is the cap to the cent
    spent = guard.spent("2026-12-01")
    print(f"run {run}: {len(reserved)} of 20 reserved (fit {fits}), spent ${spent} of cap ${cap}")
    assert len(reserved) == fits and len(refused) == 20 - fits
    assert sorted(reserved) == [pytest.approx(already + 0.7 * (i + 1)) for i in range(fits)]
    assert spent == pytest.approx(cap) and spent <= cap
