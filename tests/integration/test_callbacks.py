"""Forged webhooks through the local HTTP API are refused and change nothing."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from local.simulators.magnific import MagnificSimulator, webhook_signer
from local.stack import LocalStack
from tests.integration.conftest import RECONCILE_AFTER_SECONDS
from tests.integration.helpers import create_requests_for, png, unique_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ANOTHER_SECRET = "whsec_" + "QW5vdGhlclNlY3JldEFub3RoZXJTZWNyZXQxMjM0NQ=="


def signed_headers(secret: str, body: str, sent_at: datetime) -> dict[str, str]:
    webhook_id = f"msg_forged_{int(sent_at.timestamp())}"
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": webhook_signer(secret).sign(webhook_id, sent_at, body),
    }


def with_token(path_and_query: str, token: str) -> str:
    parts = urlsplit(path_and_query)
    return f"{parts.path}?{urlencode({'token': token})}"


@pytest.fixture
def open_task(stack: LocalStack, simulator: MagnificSimulator) -> dict[str, Any]:
    """A task waiting for its provider: its webhooks are dropped, so only the reconciler
    moves it on, after RECONCILE_AFTER_SECONDS."""
    simulator.set_faults(drop_webhooks=1)
    key = unique_key(stack, "forged callbacks")
    stack.upload(png(), key, {"duration": "3"})
    task = stack.wait_for_task(key, statuses=("SUBMITTED",), timeout=30)
    (create,) = create_requests_for(simulator, key)
    task["webhook_url"] = create["body"]["webhook_url"]
    return task


def test_forged_callbacks_get_401_and_leave_the_task_unchanged(
    stack: LocalStack, simulator: MagnificSimulator, open_task: dict[str, Any]
) -> None:
    # Given a task waiting for its provider, and what a forger might send it
    started = time.monotonic()
    provider_task_id = open_task["provider"]["task_id"]
    body = json.dumps(
        {
            "task_id": provider_task_id,
            "status": "COMPLETED",
            "generated": [f"{simulator.url}/videos/{provider_task_id}.mp4"],
        }
    )
    webhook = urlsplit(open_task["webhook_url"])
    genuine_target = f"{webhook.path}?{webhook.query}"
    real_token = parse_qs(webhook.query)["token"][0]
    now = datetime.now(UTC)
    forgeries = {
        "wrong token": (
            with_token(genuine_target, real_token[::-1]),
            signed_headers(stack.webhook_secret, body, now),
        ),
        "right token, signed with another secret": (
            genuine_target,
            signed_headers(ANOTHER_SECRET, body, now),
        ),
        "right token, no signature": (genuine_target, {"content-type": "application/json"}),
        "right token and signature, another route's URL": (
            genuine_target.replace("/callbacks/magnific/", "/callbacks/dashscope/"),
            signed_headers(stack.webhook_secret, body, now),
        ),
        "right token and signature, a route that does not exist": (
            genuine_target.replace("/callbacks/magnific/", "/callbacks/nosuchroute/"),
            signed_headers(stack.webhook_secret, body, now),
        ),
        "right token and secret, stale timestamp": (
            genuine_target,
            signed_headers(stack.webhook_secret, body, now - timedelta(minutes=10)),
        ),
    }
    before = stack.task(open_task["task_id"])

    # When each forgery is posted to the callback route
    answers = {
        name: httpx.post(stack.gateway.url + target, headers=headers, content=body.encode())
        for name, (target, headers) in forgeries.items()
    }

    # Then every one is refused, and the task is exactly as it was
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(forgeries, 401)
    assert all(answer.json() == {"message": "Unauthorized"} for answer in answers.values())
    assert time.monotonic() - started < RECONCILE_AFTER_SECONDS, "the reconciler may have moved the task"
    assert stack.task(open_task["task_id"]) == before
    assert before is not None and before["status"] == "SUBMITTED"
    # and the genuine path still finishes it (the reconciler, as the webhooks were dropped)
    finished = stack.wait_for_task(open_task["source"]["key"], timeout=60)
    assert finished["status"] == "SUCCEEDED", finished.get("error")


def test_an_unknown_route_gets_api_gateways_404(stack: LocalStack) -> None:
    # Given the HTTP API, which only routes POST /callbacks/{route}/{task_id} (and the
    # route-less path of older callback URLs)
    # When other paths and methods are requested
    answers = [
        httpx.get(f"{stack.gateway.url}/callbacks/some-task"),
        httpx.post(f"{stack.gateway.url}/nothing-here", content=b"{}"),
        httpx.post(f"{stack.gateway.url}/callbacks/a/b/c", content=b"{}"),
    ]

    # Then each gets API Gateway's own answer
    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert all(answer.json() == {"message": "Not Found"} for answer in answers)
