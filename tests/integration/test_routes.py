"""Two routes on one local stack: failover when the primary keeps failing, and a change
of primary while tasks are in flight. Real simulators, real functions, moto's server."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.integration.helpers import png, unique_key

pytestmark = pytest.mark.integration

ROUTES = ["magnific", "dashscope"]
COOLDOWN_SECONDS = 6


@pytest.fixture(scope="module")
def routed(function_log: Path) -> Iterator[LocalStack]:
    with (
        function_log.open("ab") as log_stream,
        LocalStack(
            routes=ROUTES,
            function_log=log_stream,
            environment={
                "SUBMIT_BACKOFF_BASE_SECONDS": "1",
                "BREAKER_THRESHOLD": "2",
                "BREAKER_WINDOW_SECONDS": "30",
                "BREAKER_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
            },
            reconcile_interval_seconds=5,
            simulator_options={"render_max_long_side": 160, "progress_delay": 0.1},
        ) as stack,
    ):
        yield stack


def run_phase(stack: LocalStack, name: str, count: int) -> list[dict[str, Any]]:
    keys = [unique_key(stack, f"{name} {i}") for i in range(count)]
    for key in keys:
        stack.upload(png(), key, {"duration": "3"})
    tasks = [stack.wait_for_task(key, timeout=90) for key in keys]
    for task in tasks:
        stack.wait_for_notification(task["task_id"], timeout=30)
    return tasks


def routes_of(tasks: list[dict[str, Any]]) -> Counter[str]:
    return Counter(task["provider"]["name"] for task in tasks)


def test_new_tasks_fail_over_while_the_primary_is_down_and_return_after_the_cooldown(
    routed: LocalStack,
) -> None:
    magnific = routed.simulators["magnific"]

    # Before: every task on the primary
    before = run_phase(routed, "before", 3)

    # During: the primary answers 503 to every create call
    magnific.set_faults(submit_errors=[503] * 50)
    refused_before = magnific.state()["counters"].get("create_requests", 0)
    during = run_phase(routed, "during", 4)
    refused = magnific.state()["counters"].get("create_requests", 0) - refused_before

    # After: the primary is back; once the cool-down has passed, new tasks return to it
    magnific.set_faults(submit_errors=[])
    time.sleep(COOLDOWN_SECONDS + 1)
    after = run_phase(routed, "after", 3)

    figures = {"before": routes_of(before), "during": routes_of(during), "after": routes_of(after)}
    print(f"tasks per route: {figures}; create calls the primary refused: {refused}")
    assert all(task["status"] == "SUCCEEDED" for task in before + during + after)
    assert figures["before"] == {"magnific": 3}
    assert figures["during"] == {"dashscope": 4}
    assert figures["after"] == {"magnific": 3}
    # It took the breaker's threshold of refusals (a few more from uploads in flight at
    # once) before new tasks went elsewhere, and nothing was paid twice: each task has
    # exactly one provider task, and each notification names the route that served it
    assert 2 <= refused <= 6
    for task in before + during + after:
        assert task["provider"]["task_id"]
        [notification] = routed.notifications(task["task_id"])
        assert notification.message["provider"]["name"] == task["provider"]["name"]


def test_changing_the_primary_while_tasks_are_in_flight_breaks_none_of_them(routed: LocalStack) -> None:
    magnific = routed.simulators["magnific"]
    # Given a Magnific task in flight (its webhook held back a few seconds)
    magnific.set_faults(webhook_delay=4.0)
    first = unique_key(routed, "in flight")
    routed.upload(png(), first, {"duration": "3"})
    in_flight = routed.wait_for_task(first, statuses=("SUBMITTED", "RUNNING"), timeout=30)
    assert in_flight["provider"]["name"] == "magnific"

    # When the stack is updated to make DashScope the primary, and a new image arrives
    routed.update_environment({"ROUTES": "dashscope,magnific"})
    try:
        second = unique_key(routed, "after the change")
        routed.upload(png(), second, {"duration": "3"})

        # Then the task in flight finishes on Magnific, through its webhook, and the new
        # one on DashScope, through its polls
        done_first = routed.wait_for_task(first, timeout=60)
        done_second = routed.wait_for_task(second, timeout=60)
    finally:
        routed.update_environment({"ROUTES": ",".join(ROUTES)})
        magnific.set_faults(webhook_delay=0.0)
    assert (done_first["status"], done_first["provider"]["name"], done_first["completed_via"]) == (
        "SUCCEEDED",
        "magnific",
        "callback",
    )
    assert (done_second["status"], done_second["provider"]["name"], done_second["completed_via"]) == (
        "SUCCEEDED",
        "dashscope",
        "poll",
    )
