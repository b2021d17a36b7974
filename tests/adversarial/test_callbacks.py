"""Hostile webhooks for every signed route (Magnific: Standard Webhooks; fal: Ed25519 + JWKS),
through the callback function's real entry with API Gateway HTTP API events, on moto.

Every refused delivery gets a 4xx and leaves the task table, the bucket, the topic and the
finalize queue exactly as they were. A replayed delivery is answered 200 as a no-op
(decision 6: "not allowed now") and changes nothing a second time.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.adversarial.callback_rig import (
    SIGNED_ROUTES,
    CallbackRig,
    Delivery,
    InProcessRig,
    completed_body,
    failed_body,
    fal_signer,
    flip_middle,
    invoke,
    running_body,
    running_rig,
)

pytestmark = pytest.mark.timeout(60)

ANOTHER_SECRET = "whsec_" + base64.b64encode(b"not-the-secret-magnific-holds-!!").decode()
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rig() -> Iterator[InProcessRig]:
    with running_rig() as running:
        yield running


def answer_of(response: dict[str, Any]) -> tuple[int, Any]:
    return response["statusCode"], json.loads(response["body"] or "null")


def refused_without_a_trace(rig: CallbackRig, delivery: Delivery) -> int:
    """Post `delivery`; assert it is refused with a 4xx and changes nothing; its status."""
    before = rig.snapshot()
    status, body = answer_of(invoke(delivery.event()))
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and set(body) == {"message"}
    assert rig.snapshot() == before
    return status


# -- forged, tampered, stale: one table of deliveries per route -------------------------


def magnific_forgeries(rig: CallbackRig) -> dict[str, tuple[Delivery, int]]:
    task, other = rig.seed("magnific"), rig.seed("magnific")
    body = completed_body("magnific", task.provider_task_id)
    good = rig.delivery(task, body)
    signer = rig.signer
    now = datetime.now(UTC)
    cases = {
        "signed with another secret": (
            replace(good, headers=signer.magnific_headers(body, secret=ANOTHER_SECRET)),
            401,
        ),
        "body changed after signing": (
            replace(good, body=body.replace(b"cdn.magnific.com", b"169.254.169.254")),
            401,
        ),
        "status changed after signing": (
            rig.delivery(task, running_body("magnific", task.provider_task_id), headers=good.headers),
            401,
        ),
        "timestamp header changed after signing": (
            replace(good, headers=good.headers | {"webhook-timestamp": str(int(now.timestamp()) + 1)}),
            401,
        ),
        "webhook-id changed after signing": (
            replace(good, headers=good.headers | {"webhook-id": "msg_another"}),
            401,
        ),
        "timestamp 10 minutes old": (
            replace(good, headers=signer.magnific_headers(body, sent_at=now - timedelta(minutes=10))),
            401,
        ),
        "timestamp 10 minutes ahead": (
            replace(good, headers=signer.magnific_headers(body, sent_at=now + timedelta(minutes=10))),
            401,
        ),
        "timestamp 1e400": (replace(good, headers=good.headers | {"webhook-timestamp": "1e400"}), 401),
        "timestamp of 5,000 digits": (
            replace(good, headers=good.headers | {"webhook-timestamp": "9" * 5000}),
            401,
        ),
        "signature of another version only": (
            replace(good, headers=good.headers | {"webhook-signature": "v1a," + "A" * 88}),
            401,
        ),
        "signature that is not base64": (
            replace(good, headers=good.headers | {"webhook-signature": "v1,***"}),
            401,
        ),
        "wrong token": (replace(good, token=task.token[::-1]), 401),
        "another task's token": (replace(good, token=other.token), 401),
        "no token": (replace(good, query={}), 401),
        "the token under another name": (replace(good, query={"t": task.token}), 401),
        "the token twice": (replace(good, query={"token": f"{task.token},{task.token}"}), 401),
        "another task's URL and token": (replace(good, task_id=other.task_id, token=other.token), 400),
        "a fal task's URL": (replace(good, route="fal"), 401),
        "a polling route's URL": (replace(good, route="dashscope"), 401),
        "a route that does not exist": (replace(good, route="no-such-route"), 401),
        "a task id that is no task id": (replace(good, task_id="../../etc/passwd"), 401),
        "a task id of 3,000 characters": (replace(good, task_id="a" * 3000), 401),
    }
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = {k: v for k, v in good.headers.items() if k != header}
        cases[f"no {header} header"] = (replace(good, headers=headers), 401)
        cases[f"empty {header} header"] = (replace(good, headers=good.headers | {header: ""}), 401)
    return cases


def fal_forgeries(rig: CallbackRig) -> dict[str, tuple[Delivery, int]]:
    task, other = rig.seed("fal"), rig.seed("fal")
    body = completed_body("fal", task.provider_task_id)
    good = rig.delivery(task, body)
    signer = rig.signer
    now = datetime.now(UTC).timestamp()
    request_id = task.provider_task_id
    cases = {
        "signed with another key": (
            replace(
                good,
                headers=signer.fal_headers(body, request_id, sign=fal_signer(Ed25519PrivateKey.generate())),
            ),
            401,
        ),
        "body changed after signing": (
            replace(good, body=body.replace(b"v3.fal.media", b"169.254.169.254")),
            401,
        ),
        "request id header changed after signing": (
            replace(good, headers=good.headers | {"x-fal-webhook-request-id": other.provider_task_id}),
            401,
        ),
        "user id header changed after signing": (
            replace(good, headers=good.headers | {"x-fal-webhook-user-id": "someone-else"}),
            401,
        ),
        "timestamp header changed after signing": (
            replace(good, headers=good.headers | {"x-fal-webhook-timestamp": str(int(now) + 1)}),
            401,
        ),
        "timestamp 10 minutes old": (
            replace(good, headers=signer.fal_headers(body, request_id, sent_at=now - 600)),
            401,
        ),
        "timestamp 10 minutes ahead": (
            replace(good, headers=signer.fal_headers(body, request_id, sent_at=now + 600)),
            401,
        ),
        "timestamp 1e400": (replace(good, headers=good.headers | {"x-fal-webhook-timestamp": "1e400"}), 401),
        "timestamp of 5,000 digits": (
            replace(good, headers=good.headers | {"x-fal-webhook-timestamp": "9" * 5000}),
            401,
        ),
        "signature that is not hex": (
            replace(good, headers=good.headers | {"x-fal-webhook-signature": "zz" * 64}),
            401,
        ),
        "signature of the wrong length": (
            replace(good, headers=good.headers | {"x-fal-webhook-signature": "ab" * 32}),
            401,
        ),
        "wrong token": (replace(good, token=task.token[::-1]), 401),
        "another task's token": (replace(good, token=other.token), 401),
        "no token": (replace(good, query={}), 401),
        "another task's URL and token": (replace(good, task_id=other.task_id, token=other.token), 400),
        "a Magnific task's URL": (replace(good, route="magnific"), 401),
        "a task id that is no task id": (replace(good, task_id="%00"), 401),
    }
    for header in (
        "x-fal-webhook-request-id",
        "x-fal-webhook-user-id",
        "x-fal-webhook-timestamp",
        "x-fal-webhook-signature",
    ):
        headers = {k: v for k, v in good.headers.items() if k != header}
        cases[f"no {header} header"] = (replace(good, headers=headers), 401)
        cases[f"empty {header} header"] = (replace(good, headers=good.headers | {header: ""}), 401)
    return cases


FORGERIES: dict[str, Callable[[CallbackRig], dict[str, tuple[Delivery, int]]]] = {
    "magnific": magnific_forgeries,
    "fal": fal_forgeries,
}


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_forged_tampered_stale_and_misaddressed_deliveries_are_refused_and_change_nothing(
    rig: CallbackRig, route: str
) -> None:
    # Given a task waiting on each route, and what a forger (or a confused sender) might send it
    cases = FORGERIES[route](rig)
    # When each is posted, Then each gets its 4xx and leaves every store as it was
    statuses = {name: refused_without_a_trace(rig, delivery) for name, (delivery, _) in cases.items()}
    assert statuses == {name: expected for name, (_, expected) in cases.items()}
    # and the genuine delivery still works afterwards (nothing above spoiled the task)
    genuine = rig.tasks[route][-2]
    status, body = answer_of(
        invoke(rig.delivery(genuine, completed_body(route, genuine.provider_task_id)).event())
    )
    assert (status, body) == (200, {"outcome": "finalizing"})


def test_every_unauthorized_answer_looks_the_same(rig: CallbackRig) -> None:
    # Given refusals for very different reasons
    task = rig.seed("magnific")
    body = completed_body("magnific", task.provider_task_id)
    good = rig.delivery(task, body)
    deliveries = [
        replace(good, token="nope"),
        replace(good, headers={}),
        replace(good, route="no-such-route"),
        replace(good, task_id="00000000-0000-0000-0000-000000000000"),
    ]
    # Then a forger cannot tell them apart
    answers = [invoke(delivery.event()) for delivery in deliveries]
    assert {(a["statusCode"], a["body"]) for a in answers} == {(401, '{"message":"Unauthorized"}')}


# -- authentic but hostile bodies -----------------------------------------------------


def hostile_bodies(route: str, provider_task_id: str) -> dict[str, bytes]:
    id_field = "task_id" if route == "magnific" else "request_id"
    deep = b'{"%s": "%s", "status": "OK", "payload": ' % (id_field.encode(), provider_task_id.encode())
    return {
        "malformed JSON": b'{"%s": "%s", "status": ' % (id_field.encode(), provider_task_id.encode()),
        "not an object": b'["COMPLETED"]',
        "empty": b"",
        "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
        "nested 5,000 deep inside a valid update": deep + b"[" * 5000 + b"]" * 5000 + b"}",
        "status 1e400": json.dumps({id_field: provider_task_id}).encode()[:-1] + b', "status": 1e400}',
        "status NaN": json.dumps({id_field: provider_task_id}).encode()[:-1] + b', "status": NaN}',
        "an integer of 5,000 digits": json.dumps({id_field: provider_task_id, "status": "OK"}).encode()[:-1]
        + b', "n": '
        + b"9" * 5000
        + b"}",
        "known fields of the wrong type": json.dumps({id_field: 42, "status": ["OK"]}).encode(),
        "only unknown fields": json.dumps({"id": provider_task_id, "state": "done", "admin": True}).encode(),
    }


def test_signed_hostile_bodies_are_refused_with_400_and_change_nothing(rig: CallbackRig) -> None:
    # Given authentic signatures (a compromised or buggy sender) over bodies we cannot read
    for route in SIGNED_ROUTES:
        task = rig.seed(route)
        for name, body in hostile_bodies(route, task.provider_task_id).items():
            # When each is delivered, Then it is a 400 and nothing changes
            status = refused_without_a_trace(rig, rig.delivery(task, body))
            assert status == 400, (route, name)


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_oversized_bodies_are_refused_before_any_check_and_change_nothing(
    rig: InProcessRig, route: str
) -> None:
    # Given bodies over the 1 MiB a webhook may carry, signed and forged
    task = rig.seed(route)
    # (padded with JSON whitespace: the envelope stays exact, only its size is hostile)
    body = completed_body(route, task.provider_task_id) + b" " * (MIB + 1)
    signed = rig.delivery(task, body)
    forged = replace(signed, headers={})
    # When they are posted, Then both are 413 and change nothing; no JWKS is fetched for them
    assert rig.jwks is not None
    jwks_requests = rig.jwks.requests
    assert refused_without_a_trace(rig, signed) == 413
    assert refused_without_a_trace(rig, forged) == 413
    assert rig.jwks.requests == jwks_requests
    # and a body just under the cap is read as usual
    fits = completed_body(route, task.provider_task_id) + b" " * (MIB - 1024)
    assert answer_of(invoke(rig.delivery(task, fits).event())) == (200, {"outcome": "finalizing"})


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_unknown_fields_in_an_authentic_update_are_refused_and_change_nothing(
    rig: CallbackRig, route: str
) -> None:
    # Given authentic completions carrying fields the route's envelope does not define,
    # huge numbers and deep values among them
    task = rig.seed(route)
    extras = {
        "one unknown field": b', "admin": true}',
        "huge numbers": b', "cost": 1e400, "rank": -1e400, "version": 123456789012345678901234567890}',
        "a nested value": b', "x": [[[{}]]]}',
    }
    for name, extra in extras.items():
        body = completed_body(route, task.provider_task_id)[:-1] + extra
        # When each is delivered, Then it is a 400 naming the fields, and nothing changes
        status = refused_without_a_trace(rig, rig.delivery(task, body))
        assert status == 400, (route, name)
    answer = answer_of(
        invoke(
            rig.delivery(task, completed_body(route, task.provider_task_id)[:-1] + b', "admin": 1}').event()
        )
    )
    assert answer[0] == 400
    assert "does not define: admin" in json.dumps(answer[1])
    # and the same completion without them is applied once
    assert answer_of(invoke(rig.delivery(task, completed_body(route, task.provider_task_id)).event())) == (
        200,
        {"outcome": "finalizing"},
    )


def test_unknown_fields_inside_fals_payload_are_the_models_output_and_accepted(rig: CallbackRig) -> None:
    # Given an authentic fal completion whose envelope is exact: its payload is the model's
    # output, open by design (Magnific's body has no nested object)
    task = rig.seed("fal")
    body = json.loads(completed_body("fal", task.provider_task_id))
    body["payload"]["timings"] = {"inference": 12.5}
    # When it is delivered, Then the task moves on
    answer = answer_of(invoke(rig.delivery(task, json.dumps(body).encode()).event()))
    assert answer == (200, {"outcome": "finalizing"})


# -- replays ----------------------------------------------------------------------------


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_a_replayed_completion_is_a_no_op(rig: CallbackRig, route: str) -> None:
    # Given a completion that was delivered and applied
    task = rig.seed(route)
    delivery = rig.delivery(task, completed_body(route, task.provider_task_id))
    before = rig.snapshot()
    assert answer_of(invoke(delivery.event())) == (200, {"outcome": "finalizing"})
    applied = rig.snapshot()
    assert applied.finalize_orders == before.finalize_orders + 1
    # When the very same delivery comes again, three times (within the tolerance window)
    answers = [answer_of(invoke(delivery.event())) for _ in range(3)]
    # Then each is acknowledged as a no-op, and nothing changes a second time
    assert answers == [(200, {"outcome": "unchanged"})] * 3
    assert rig.snapshot() == applied


def test_a_replayed_progress_update_is_a_no_op(rig: CallbackRig) -> None:
    task = rig.seed("magnific")
    delivery = rig.delivery(task, running_body("magnific", task.provider_task_id))
    before = rig.snapshot()
    assert answer_of(invoke(delivery.event())) == (200, {"outcome": "running"})
    applied = rig.snapshot()
    assert applied.items != before.items  # the snapshot sees a write
    assert answer_of(invoke(delivery.event())) == (200, {"outcome": "unchanged"})
    assert rig.snapshot() == applied


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_a_failure_replayed_after_the_task_ended_announces_nothing_twice(
    rig: CallbackRig, route: str
) -> None:
    # Given a failure webhook, applied, and its finalize order done: the task FAILED, announced
    rig.drain_finalize_queue()
    task = rig.seed(route)
    delivery = rig.delivery(task, failed_body(route, task.provider_task_id))
    before = rig.snapshot()
    assert answer_of(invoke(delivery.event())) == (200, {"outcome": "finalizing"})
    assert rig.snapshot().finalize_orders == 1
    assert rig.run_finalize_orders() == {"batchItemFailures": []}
    ended = rig.snapshot()
    assert ended.notifications == before.notifications + 1
    assert ended.finalize_orders == before.finalize_orders
    stored = rig.store.get(task.task_id)
    assert stored is not None and stored.status.value == "FAILED"
    # When the delivery is replayed
    assert answer_of(invoke(delivery.event())) == (200, {"outcome": "unchanged"})
    # Then no second order, no second notification, no write
    assert rig.snapshot() == ended


# -- what a refusal costs ---------------------------------------------------------------


@contextlib.contextmanager
def table_calls() -> Iterator[list[str]]:
    """The DynamoDB operations the function's own client makes while the block runs."""
    from i2v.aws import client

    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = client("dynamodb").meta.events
    events.register("before-call.dynamodb", record, unique_id="adversarial-table-calls")
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb", unique_id="adversarial-table-calls")


@pytest.mark.parametrize("route", SIGNED_ROUTES)
def test_a_delivery_that_is_not_authentic_costs_no_table_call(rig: CallbackRig, route: str) -> None:
    # Given a forged signature, a changed body, a missing header, and signed deliveries to
    # paths whose task id is longer than any key DynamoDB takes (a ValidationException there)
    task = rig.seed(route)
    body = completed_body(route, task.provider_task_id)
    good = rig.delivery(task, body)
    not_authentic = [
        replace(
            good, headers={k: flip_middle(v) if "signature" in k else v for k, v in good.headers.items()}
        ),
        replace(good, body=body + b" "),
        replace(good, headers={k: v for k, v in good.headers.items() if "timestamp" not in k}),
        replace(good, task_id="a" * 3000),
        replace(good, task_id="é" * 1025),  # 2,050 bytes in UTF-8
    ]
    # When they are posted, Then they are refused before any table call
    with table_calls() as calls:
        assert [invoke(d.event())["statusCode"] for d in not_authentic] == [401] * len(not_authentic)
    assert calls == []
    # while an authentic delivery with a wrong token costs its one conditional write
    with table_calls() as calls:
        assert invoke(replace(good, token="wrong").event())["statusCode"] == 401
    assert calls == ["UpdateItem"]
