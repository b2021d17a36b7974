"""What a route learns by reading its provider's status: polls on a polling route, the
reconciler on a webhook route whose webhooks are lost. Errors on those reads are retried,
and duplicated poll orders store one video and notify once."""

from __future__ import annotations

import pytest

from i2v.usecases.poll import PollOrder
from tests.contract.checks import RouteUnderTest, assert_one_notification, assert_one_video

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_status_read_errors_are_retried_until_the_task_succeeds(route: RouteUnderTest) -> None:
    # Given a provider whose next status reads answer 429 (Retry-After: 1 s), 503, 503; on
    # a webhook route its webhooks are lost too, so the outcome comes from status reads
    route.simulator.set_faults(status_errors=[429, 503, 503], retry_after=1, drop_webhooks=1)

    # When an image is uploaded
    key = route.upload("status-errors")
    task = route.finished(key, timeout=90)

    # Then every injected error was answered, and the task still succeeded
    assert route.simulator.faults()["status_errors"] == []
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert route.webhook_deliveries(task["task_id"]) == []
    # with one video and one notification
    assert_one_video(route, task)
    assert_one_notification(route, task)


def test_duplicated_poll_orders_store_one_video_and_notify_once(route: RouteUnderTest) -> None:
    if route.takes_webhooks:
        pytest.skip(
            f"{route.name} is a webhook route: it schedules no polls (see the duplicated-webhook case)"
        )
    # Given a submitted task with two more copies of its poll order on the poll queue
    key = route.upload("duplicate-polls")
    task = route.submitted(key)
    order = PollOrder(
        task_id=task["task_id"],
        route=route.name,
        provider_task_id=task["provider"]["task_id"],
        model=task["options"].get("model"),
        submitted_at=task["submitted_at"],
    )
    for _ in range(2):
        route.stack.sqs.send_message(QueueUrl=route.poll_queue_url, MessageBody=order.model_dump_json())

    # When the three poll chains run
    task = route.finished(key)

    # Then the task succeeded once: one video, one notification
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert_one_video(route, task)
    assert_one_notification(route, task, settle=False)

    # And a copy that arrives after the end changes nothing
    route.stack.sqs.send_message(QueueUrl=route.poll_queue_url, MessageBody=order.model_dump_json())
    route.wait_until_quiet()
    assert route.stack.task(task["task_id"]) == task
    assert_one_video(route, task)
    assert_one_notification(route, task)
