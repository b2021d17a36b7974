"""The Magnific adapter: its wire format, error mapping and webhook signatures."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from i2v.domain import Options
from i2v.errors import BadCallback, ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.base import ProviderState, SubmitRequest
from i2v.providers.magnific import MagnificProvider, MagnificSettings
from i2v.providers.signatures import webhook_key

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


class Keys:
    def __init__(self, secret: str = WHSEC) -> None:
        self.secret = secret

    def api_key(self) -> str:
        return "api-key-1"

    def webhook_secret(self) -> str:
        return self.secret

    def rotated_webhook_secrets(self) -> tuple[str, ...]:
        return ()


def provider_answering(handler: httpx.MockTransport, secret: str = WHSEC) -> MagnificProvider:
    client = httpx.Client(transport=handler)
    return MagnificProvider(
        MagnificSettings(base_url="https://api.example.test"), lambda: client, Keys(secret)
    )


def signed(body: bytes, secret: str, *, at: float | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    timestamp = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    signature = Webhook(webhook_key(secret)).sign(msg_id, timestamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def test_submit_sends_the_documented_body_and_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"task_id": "t-9", "status": "CREATED", "generated": []}})

    provider = provider_answering(httpx.MockTransport(answer))
    task_id = provider.submit(
        SubmitRequest(
            image_url="https://s3/x",
            webhook_url="https://h/cb?token=t",
            options=Options(prompt="p", resolution="720P", duration=4, seed=7),
        )
    )
    assert task_id == "t-9"
    [request] = seen
    assert request.url == "https://api.example.test/v1/ai/image-to-video/happy-horse-1"
    assert request.headers["x-magnific-api-key"] == "api-key-1"
    assert json.loads(request.content) == {
        "image_url": "https://s3/x",
        "prompt": "p",
        "resolution": "720P",
        "duration": 4,
        "seed": 7,
        "webhook_url": "https://h/cb?token=t",
    }


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "retry_after"),
    [
        (429, {"Retry-After": "12"}, {"message": "Too many requests"}, ProviderUnavailable, 12.0),
        (503, {}, {"message": "Service Unavailable. Please try again later."}, ProviderUnavailable, None),
        (500, {}, {"message": "Internal Server Error"}, ProviderUnavailable, None),
        (
            400,
            {},
            {
                "message": "Your request parameters didn't validate.",
                "invalid_params": [{"name": "duration", "reason": "must be 3..15"}],
            },
            ProviderRejected,
            None,
        ),
        (401, {}, {"message": "Invalid API key"}, ProviderRejected, None),
    ],
)
def test_errors_map_to_retry_or_fail(
    status: int,
    headers: dict[str, str],
    body: dict[str, object],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    provider = provider_answering(
        httpx.MockTransport(lambda _: httpx.Response(status, json=body, headers=headers))
    )
    with pytest.raises(error) as raised:
        provider.submit(SubmitRequest(image_url="https://s3/x", options=Options()))
    if isinstance(raised.value, ProviderUnavailable):
        assert raised.value.retry_after == retry_after
    if status == 400:
        assert "duration: must be 3..15" in str(raised.value)


def test_a_timeout_is_transient() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderUnavailable):
        provider_answering(httpx.MockTransport(slow)).submit(
            SubmitRequest(image_url="https://s3/x", options=Options())
        )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("CREATED", ProviderState.PENDING),
        ("IN_PROGRESS", ProviderState.RUNNING),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("FAILED", ProviderState.FAILED),
        ("QUEUED", ProviderState.PENDING),
    ],
)
def test_status_maps_every_value_and_unknown_ones_stay_open(status: str, state: ProviderState) -> None:
    body = {"data": {"task_id": "t-1", "status": status, "generated": ["https://cdn.example/v.mp4"]}}
    update = provider_answering(httpx.MockTransport(lambda _: httpx.Response(200, json=body))).status("t-1")
    assert update.state is state and update.raw_status == status
    assert update.video_url == "https://cdn.example/v.mp4"


@pytest.mark.parametrize("secret", [WHSEC, "a-plain-dashboard-secret"])
def test_a_signed_webhook_is_accepted_with_either_secret_encoding(secret: str) -> None:
    body = json.dumps({"task_id": "t-1", "status": "COMPLETED", "generated": ["https://cdn/v.mp4"]}).encode()
    provider = provider_answering(httpx.MockTransport(lambda _: httpx.Response(500)), secret)
    update = provider.parse_callback(signed(body, secret), body)
    assert update.state is ProviderState.SUCCEEDED and update.video_url == "https://cdn/v.mp4"


def test_a_rotated_key_list_passes_when_any_entry_matches() -> None:
    body = b'{"task_id":"t-1","status":"IN_PROGRESS","generated":[]}'
    headers = signed(body, WHSEC)
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    provider = provider_answering(httpx.MockTransport(lambda _: httpx.Response(500)))
    assert provider.parse_callback(headers, body).state is ProviderState.RUNNING


@pytest.mark.parametrize(
    "forge",
    ["tampered body", "wrong secret", "stale", "future", "no headers", "garbage signature", "not utf-8"],
)
def test_forged_webhooks_are_unauthorized(forge: str) -> None:
    body = b'{"task_id":"t-1","status":"COMPLETED","generated":["https://cdn/v.mp4"]}'
    headers = signed(body, WHSEC)
    if forge == "tampered body":
        body = body.replace(b"cdn", b"evil")
    elif forge == "wrong secret":
        headers = signed(body, "whsec_" + base64.b64encode(b"z" * 32).decode())
    elif forge == "stale":
        headers = signed(body, WHSEC, at=time.time() - 301)
    elif forge == "future":
        headers = signed(body, WHSEC, at=time.time() + 301)
    elif forge == "no headers":
        headers = {}
    elif forge == "garbage signature":
        headers["webhook-signature"] = "v1"
    elif forge == "not utf-8":
        body = b"\xff\xfe" + body
    provider = provider_answering(httpx.MockTransport(lambda _: httpx.Response(500)))
    with pytest.raises(Unauthorized):
        provider.parse_callback(headers, body)


def test_an_authentic_but_malformed_body_is_a_bad_callback() -> None:
    body = b'{"status": 3}'
    provider = provider_answering(httpx.MockTransport(lambda _: httpx.Response(500)))
    with pytest.raises(BadCallback):
        provider.parse_callback(signed(body, WHSEC), body)


def test_a_task_the_provider_does_not_know_is_gone() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "Not found"})

    update = provider_answering(httpx.MockTransport(answer)).status("t-unknown")

    assert update.state is ProviderState.GONE
    assert update.provider_task_id == "t-unknown"


def test_a_status_for_model_1_1_asks_its_own_path() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"data": {"task_id": "t-1", "status": "IN_PROGRESS", "generated": []}}
        )

    update = provider_answering(httpx.MockTransport(answer)).status("t-1", model="1.1")

    assert update.state is ProviderState.RUNNING
    assert seen[0].url == "https://api.example.test/v1/ai/image-to-video/happy-horse-1-1/t-1"
