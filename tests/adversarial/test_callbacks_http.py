"""Hostile webhooks through the local stack's real HTTP API (local/gateway.py), with the
callback function in its own process and moto's server as AWS: a subset of
test_callbacks.py's cases over the wire, and the fuzz of test_fuzz.py over HTTP.

The finalize queue's consumer is stopped for this module, so a finalize order an authentic
delivery sends stays in the queue (counted) instead of changing state in the background.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.stack import LocalStack
from tests.adversarial.callback_rig import (
    SIGNED_ROUTES,
    CallbackRig,
    Delivery,
    SeededTask,
    Signer,
    completed_body,
    flip_middle,
    running_body,
)
from tests.adversarial.fuzz_requests import FUZZ_SETTINGS, check, drawn_requests, openapi

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with (
        tempfile.NamedTemporaryFile(prefix="i2v-adversarial-", suffix=".log") as log,
        LocalStack(
            routes=list(SIGNED_ROUTES),
            # Nothing but these tests moves a task: the reconciler waits a day.
            environment={"RECONCILE_AFTER_SECONDS": "86400"},
            function_log=log,
        ) as local_stack,
    ):
        for dispatcher in local_stack.dispatchers:
            if dispatcher.queue_url == local_stack.finalize_queue_url:
                dispatcher.stop()
        yield local_stack


@pytest.fixture(scope="module")
def rig(stack: LocalStack) -> CallbackRig:
    fal = stack.simulators["fal"]
    user_id = fal.webhook_headers("msg", '{"request_id": "r"}')["x-fal-webhook-user-id"]  # type: ignore[attr-defined]
    magnific_secret = stack.route_secrets["magnific"].webhook_secret
    assert magnific_secret is not None
    return CallbackRig(
        stack.s3,
        stack.sqs,
        stack.dynamodb,
        stack.bucket,
        stack.table,
        stack.tap_queue_url,
        stack.finalize_queue_url,
        Signer(magnific_secret, fal_sign=fal.sign, fal_user_id=user_id),  # type: ignore[attr-defined]
    )


@pytest.fixture(scope="module")
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway.url, timeout=30) as client:
        yield client


def poster(http: httpx.Client) -> Any:
    def post(delivery: Delivery) -> tuple[int, Any]:
        answer = http.post(delivery.target(), headers=delivery.headers, content=delivery.body)
        return answer.status_code, answer.json()

    return post


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_hostile_deliveries_over_http_are_refused_and_change_nothing(
    rig: CallbackRig, http: httpx.Client, route: str
) -> None:
    # Given a task waiting on the route, and a genuine completion for it
    task, other = rig.seed(route), rig.seed(route)
    body = completed_body(route, task.provider_task_id)
    good = rig.delivery(task, body)
    stale = (
        rig.signer.magnific_headers(body, sent_at=datetime.now(UTC) - timedelta(minutes=10))
        if route == "magnific"
        else rig.signer.fal_headers(body, task.provider_task_id, sent_at=datetime.now(UTC).timestamp() - 600)
    )
    cases = {
        "forged": (
            replace(
                good, headers={k: flip_middle(v) if "signature" in k else v for k, v in good.headers.items()}
            ),
            401,
        ),
        "tampered": (replace(good, body=body.replace(b"https://", b"http://")), 401),
        "stale": (replace(good, headers=stale), 401),
        "no headers": (replace(good, headers={}), 401),
        "wrong token": (replace(good, token="x" + task.token), 401),
        "another task's token": (replace(good, token=other.token), 401),
        "another route's URL": (replace(good, route="dashscope"), 401),
        "a task id that is none": (replace(good, task_id="..%2F..%2Fetc"), 401),
        "nested 100,000 deep, signed": (rig.delivery(task, b"[" * 100_000 + b"]" * 100_000), 400),
        "malformed, signed": (rig.delivery(task, body[:-5]), 400),
        "oversized, signed": (
            rig.delivery(task, completed_body(route, task.provider_task_id, pad="x" * MIB)),
            413,
        ),
    }
    post = poster(http)
    for name, (delivery, expected) in cases.items():
        before = rig.snapshot()
        # When each is posted over HTTP, Then it gets its 4xx and nothing changes
        status, answer = post(delivery)
        assert (name, status) == (name, expected), answer
        assert rig.snapshot() == before, name


def test_a_replay_over_http_is_answered_200_and_changes_nothing(rig: CallbackRig, http: httpx.Client) -> None:
    # Given a progress update and a completion, delivered once and applied
    post = poster(http)
    for route, body_of in (("magnific", running_body), ("magnific", completed_body), ("fal", completed_body)):
        task = rig.seed(route)
        delivery = rig.delivery(task, body_of(route, task.provider_task_id))
        status, answer = post(delivery)
        assert status == 200 and answer["outcome"] in ("running", "finalizing"), answer
        applied = rig.snapshot()
        # When the same delivery is posted twice more
        replays = [post(delivery) for _ in range(2)]
        # Then each is a no-op: no write, no second finalize order, no notification
        assert replays == [(200, {"outcome": "unchanged"})] * 2
        assert rig.snapshot() == applied


@pytest.fixture(scope="module")
def pool(rig: CallbackRig) -> dict[str, list[SeededTask]]:
    return {route: [rig.seed(route) for _ in range(3)] for route in SIGNED_ROUTES}


def test_the_fuzz_over_http_never_fails_and_changes_nothing_unless_authentic(
    rig: CallbackRig, http: httpx.Client, pool: dict[str, list[SeededTask]]
) -> None:
    document, post, seen = openapi(), poster(http), Counter[int]()
    state = [rig.snapshot()]

    @settings(FUZZ_SETTINGS, max_examples=15)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        status, state[0] = check(rig, document, post, data.draw(drawn_requests(rig, pool)), state[0])
        seen[status] += 1

    fuzz()
    assert {200, 401} <= set(seen), seen
