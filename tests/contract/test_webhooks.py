"""A webhook route's callbacks: duplicated, late and out-of-order webhooks change nothing, a
lost one is made up for by the reconciler, and forged or stale ones are refused.

Webhook bodies come from the route's simulator (`webhook_body`, its wire format), signed
as its provider signs them (the route's line in routes.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx
import pytest

from local.simulators.core import SimTask, State
from tests.contract.checks import RouteUnderTest, assert_one_notification, assert_one_video
from tests.contract.conftest import STACK_ENVIRONMENT
from tests.contract.routes import WebhookSigner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STALE_SECONDS = 600  # past every route's tolerance window (5 minutes)


def needs_webhooks(route: RouteUnderTest, instead: str) -> None:
    if not route.takes_webhooks:
        pytest.skip(f"{route.name} is a polling route: its provider sends no webhooks ({instead})")


def signer_of(route: RouteUnderTest) -> WebhookSigner:
    needs_webhooks(route, "it is given no callback URL and signs nothing: no signature to forge or replay")
    sign = route.contract.sign_webhook
    assert sign is not None, f"{route.name} takes webhooks: give its line in routes.py a sign_webhook"
    return sign


def webhook_body(
    route: RouteUnderTest, task: SimTask[Any], state: State, video_url: str | None
) -> bytes | None:
    """The body the route's provider sends for `task` in `state`, or None if it sends none then."""
    body = route.simulator.webhook_body(replace(task, state=state, video_url=video_url))
    return None if body is None else json.dumps(body, separators=(",", ":")).encode()


def stored_task(route: RouteUnderTest, task: dict[str, Any]) -> SimTask[Any]:
    found = route.simulator.find_task(task["provider"]["task_id"])
    assert found is not None
    return found


def test_duplicated_webhooks_are_acknowledged_and_change_nothing(route: RouteUnderTest) -> None:
    needs_webhooks(route, "its duplicates are duplicated poll orders, a case of their own")
    # Given a provider that delivers every webhook twice
    route.simulator.set_faults(duplicate_webhooks=True)

    # When an image is uploaded
    key = route.upload("duplicate-webhooks")
    task = route.finished(key)

    # Then every webhook arrived twice and each delivery was acknowledged
    assert task["status"] == "SUCCEEDED", task.get("error")
    deliveries = route.webhook_deliveries(task["task_id"])
    assert deliveries, "no webhook reached the HTTP API"
    assert set(Counter(delivery.body for delivery in deliveries).values()) == {2}
    assert [delivery.status for delivery in deliveries if not 200 <= delivery.status < 300] == []
    # and the task succeeded once: one video, one notification
    assert_one_video(route, task)
    assert_one_notification(route, task)


def test_late_and_out_of_order_webhooks_are_acknowledged_and_change_nothing(route: RouteUnderTest) -> None:
    needs_webhooks(route, "a late answer is a late poll order, covered with the duplicated poll orders")
    sign = signer_of(route)
    # Given a finished task, its stored video, and the webhooks it was sent
    key = route.upload("out-of-order-webhooks")
    task = route.finished(key)
    assert task["status"] == "SUCCEEDED", task.get("error")
    stored = route.stack.s3.head_object(Bucket=route.stack.bucket, Key=task["video"]["key"])
    delivered = route.webhook_deliveries(task["task_id"])
    sim_task = stored_task(route, task)
    assert sim_task.request.webhook_url

    # When every webhook is replayed as it came, oldest first (an earlier status after the
    # last one), then a properly signed in-progress and a contradicting failure are posted
    replies = [
        httpx.post(
            route.stack.gateway.url + delivery.target,
            content=delivery.body,
            headers=[(k, v) for k, v in delivery.headers if k.lower() not in ("host", "content-length")],
            timeout=30,
        )
        for delivery in delivered
    ]
    provider_task_id = task["provider"]["task_id"]
    for state in (State.IN_PROGRESS, State.FAILED):
        body = webhook_body(route, sim_task, state, video_url=None)
        if body is not None:
            headers = sign(route.stack, route.name, provider_task_id, body, int(time.time()))
            replies.append(route.post_webhook(sim_task.request.webhook_url, body, headers))

    # Then each is acknowledged and is a no-op: the same item, video and notification
    assert len(replies) > len(delivered), "the route's provider has no webhook body to replay out of order"
    assert [reply.status_code for reply in replies if not 200 <= reply.status_code < 300] == []
    assert route.stack.task(task["task_id"]) == task
    again = route.stack.s3.head_object(Bucket=route.stack.bucket, Key=task["video"]["key"])
    assert (again["ETag"], again["LastModified"]) == (stored["ETag"], stored["LastModified"])
    assert_one_video(route, task)
    assert_one_notification(route, task)


def test_a_lost_webhook_is_made_up_for_by_the_reconciler(route: RouteUnderTest) -> None:
    needs_webhooks(route, "none can be lost: polls learn every outcome")
    # Given a provider whose webhooks for the next task never arrive
    route.simulator.set_faults(drop_webhooks=1)

    # When an image is uploaded
    key = route.upload("lost-webhook")
    task = route.finished(key)

    # Then the reconciler read the finished provider task and the video was stored
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert route.webhook_deliveries(task["task_id"]) == []
    assert route.simulator.state()["counters"]["webhooks_dropped"] >= 1
    assert task["completed_via"] == "reconcile"
    assert_one_video(route, task)
    assert_one_notification(route, task)


def test_forged_and_stale_webhooks_get_401_and_change_nothing(route: RouteUnderTest) -> None:
    sign = signer_of(route)
    # Given an open task (its webhooks are lost: only the reconciler moves it, after
    # RECONCILE_AFTER_SECONDS) and the completion webhook its provider would send
    route.simulator.set_faults(drop_webhooks=1)
    key = route.upload("forged-webhooks")
    open_task = route.submitted(key)
    started = time.monotonic()
    provider_task_id = open_task["provider"]["task_id"]
    sim_task = stored_task(route, open_task)
    url = sim_task.request.webhook_url
    assert url
    genuine = webhook_body(route, sim_task, State.COMPLETED, route.simulator.video_url(provider_task_id))
    forged = webhook_body(route, sim_task, State.COMPLETED, "http://127.0.0.1:9/forged.mp4")
    assert genuine is not None and forged is not None
    now = int(time.time())
    attempts = {
        "signature of another body": (forged, sign(route.stack, route.name, provider_task_id, genuine, now)),
        "stale timestamp": (
            genuine,
            sign(route.stack, route.name, provider_task_id, genuine, now - STALE_SECONDS),
        ),
    }
    before = route.stack.task(open_task["task_id"])
    assert before is not None and before["status"] in ("SUBMITTED", "RUNNING"), before
    videos_before = list(route.stack.video_objects())
    notifications_before = route.stack.notifications()

    # When each is posted to the task's callback URL, token and all
    answers = {name: route.post_webhook(url, body, headers) for name, (body, headers) in attempts.items()}

    # Then each is refused, and the task, the bucket and the topic are as they were
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(attempts, 401)
    elapsed = time.monotonic() - started
    assert elapsed < float(STACK_ENVIRONMENT["RECONCILE_AFTER_SECONDS"]), (
        "the reconciler may have moved the task"
    )
    assert route.stack.task(open_task["task_id"]) == before
    assert list(route.stack.video_objects()) == videos_before
    assert route.stack.notifications() == notifications_before
    # and the genuine path still finishes it
    task = route.finished(key)
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert_one_video(route, task)
    assert_one_notification(route, task)
