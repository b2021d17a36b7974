"""The route breaker in the task table (moto), and the choice of route it drives."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import boto3

from i2v.routing import Breaker, BreakerConfig, RouteChoice
from tests.support.aws import create_tasks_table, serial_moto_server
from tests.support.fakes import Clock
from tests.unit.conftest import Aws

CONFIG = BreakerConfig(threshold=3, window_seconds=60, cooldown_seconds=300, cache_seconds=0)


def breaker(aws: Aws, clock: Clock, opened: list[str] | None = None) -> Breaker:
    return Breaker(
        aws.dynamodb, aws.table, CONFIG, clock=clock, on_open=(opened if opened is not None else []).append
    )


def test_failures_within_the_window_open_the_breaker_for_the_cooldown(aws: Aws, clock: Clock) -> None:
    opened: list[str] = []
    routes = breaker(aws, clock, opened)

    routes.failure("magnific")
    routes.failure("magnific")
    assert not routes.is_open("magnific")
    routes.failure("magnific")

    assert routes.is_open("magnific") and opened == ["magnific"]
    assert not routes.is_open("fal")
    clock.advance(299)
    assert routes.is_open("magnific")
    clock.advance(2)
    assert not routes.is_open("magnific")


def test_failures_spread_wider_than_the_window_do_not_open_it(aws: Aws, clock: Clock) -> None:
    routes = breaker(aws, clock)
    for _ in range(5):
        routes.failure("magnific")
        clock.advance(31)  # two failures at most in any 60 s
        routes.failure("magnific")
        clock.advance(61)
    assert not routes.is_open("magnific")


def test_the_state_is_shared_by_every_process(aws: Aws, clock: Clock) -> None:
    # Given two functions' breakers on the same table
    one, other = breaker(aws, clock), breaker(aws, clock)

    # When failures are seen by both
    one.failure("dashscope")
    other.failure("dashscope")
    one.failure("dashscope")

    # Then both see the route open
    assert one.is_open("dashscope") and other.is_open("dashscope")


def test_concurrent_failures_are_all_counted_and_open_it(clock: Clock) -> None:
    opened: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    with serial_moto_server() as endpoint:

        def client() -> Any:
            return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)

        table = create_tasks_table(client(), name=f"tasks-{uuid.uuid4().hex[:8]}")

        def fail() -> None:
            # Each thread is its own function: its own client and breaker.
            own = Breaker(client(), table, CONFIG, clock=clock, on_open=opened.append)
            barrier.wait()
            try:
                own.failure("fal")
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=fail) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # Then every failure counted (the concurrent first ones did not reset each other:
        # before the window rule the breaker never opened), and it opened exactly once, on
        # a server that applies writes to one item one at a time, as DynamoDB does
        assert errors == []
        assert Breaker(client(), table, CONFIG, clock=clock).is_open("fal")
        assert opened == ["fal"]


def test_the_breaker_items_stay_out_of_the_open_tasks_index(aws: Aws, clock: Clock) -> None:
    routes = breaker(aws, clock)
    for _ in range(3):
        routes.failure("magnific")
    item = aws.dynamodb.get_item(TableName=aws.table, Key={"task_id": {"S": "route#magnific"}})["Item"]
    assert "open_shard" not in item and "source_uri" not in item


def test_new_tasks_go_to_the_next_closed_route_and_come_back(aws: Aws, clock: Clock) -> None:
    routes = breaker(aws, clock)
    choice = RouteChoice(routes=("magnific", "fal", "dashscope"), breaker=routes)
    assert choice.pick() == "magnific"

    for _ in range(3):
        choice.failed("magnific")
    assert choice.pick() == "fal"
    for _ in range(3):
        choice.failed("fal")
    assert choice.pick() == "dashscope"

    clock.advance(301)
    assert choice.pick() == "magnific"


def test_every_route_open_falls_back_to_the_primary(aws: Aws, clock: Clock) -> None:
    routes = breaker(aws, clock)
    choice = RouteChoice(routes=("magnific", "fal"), breaker=routes)
    for name in ("magnific", "fal"):
        for _ in range(3):
            choice.failed(name)
    assert choice.pick() == "magnific"


def test_one_route_has_no_breaker_and_never_touches_the_table(aws: Aws, clock: Clock) -> None:
    calls: list[str] = []
    aws.dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    choice = RouteChoice(routes=("magnific",), breaker=breaker(aws, clock))
    for _ in range(10):
        choice.failed("magnific")
    assert choice.pick() == "magnific"
    assert calls == []
