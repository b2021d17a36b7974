"""The fal.ai adapter against the fal simulator over loopback: submit, status, result and
cancel on fal's wire format, and webhooks verified with the simulator's real Ed25519
signatures and JWKS (caching, one rate-limited refresh, rotation, padded keys)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from i2v.domain import Options
from i2v.errors import BadCallback, ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.base import ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.fal import ROUTE, FalProvider, FalSettings, jwk_ed25519_key
from i2v.providers.route import RouteConfigError
from local.simulators.fal import JWKS_PATH, FalSimulator
from tests.unit.test_fal_simulator import (
    Delivery,
    ImageServer,
    WebhookReceiver,
    picture,
)

API_KEY = "fal-adapter-test-key"
WAIT_SECONDS = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class Keys:
    def api_key(self) -> str:
        return API_KEY

    def webhook_secret(self) -> str:
        raise AssertionError("fal signs with public keys: no webhook secret is read")


class Clock:
    """Wall time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer({"landscape.jpg": picture(800, 450, "JPEG"), "small.png": picture(200, 200, "PNG")})
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def running_simulator(*, padded: bool = False, progress_delay: float = 0.05) -> FalSimulator:
    return FalSimulator(
        api_key=API_KEY, render_max_long_side=256, progress_delay=progress_delay, jwks_padded=padded
    )


@pytest.fixture
def simulator() -> Iterator[FalSimulator]:
    with running_simulator() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def adapter(simulator: FalSimulator, http: httpx.Client, clock: Clock, **settings: object) -> FalProvider:
    config = FalSettings(base_url=simulator.url, jwks_url=f"{simulator.url}{JWKS_PATH}", **settings)  # type: ignore[arg-type]
    return FalProvider(config, lambda: http, Keys(), clock=clock)


@pytest.fixture
def fal(simulator: FalSimulator, http: httpx.Client, clock: Clock) -> FalProvider:
    return adapter(simulator, http, clock)


def request_for(images: ImageServer, name: str = "landscape.jpg", **options: object) -> SubmitRequest:
    return SubmitRequest(
        image_url=images.url(name),
        options=Options(duration=3, resolution="720P", **options),  # type: ignore[arg-type]
    )


def webhook_of(
    fal: FalProvider, receiver: WebhookReceiver, images: ImageServer, name: str = "landscape.jpg"
) -> Delivery:
    before = len(receiver.deliveries)
    request = request_for(images, name)
    fal.submit(request.model_copy(update={"webhook_url": receiver.url()}))
    return receiver.wait_for(before + 1)[before]


def poll(fal: FalProvider, request_id: str, *, model: str | None = None) -> list[ProviderUpdate]:
    seen: list[ProviderUpdate] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while not seen or seen[-1].state in (ProviderState.PENDING, ProviderState.RUNNING):
        assert time.monotonic() < deadline, seen
        seen.append(fal.status(request_id, model=model))
        time.sleep(0.02)
    return seen


# -- settings ---------------------------------------------------------------------------------


def test_the_route_entry_and_its_documented_defaults() -> None:
    # Given / When
    settings = ROUTE.load_settings({"FAL_JWKS_URL": "https://rest.fal.ai/.well-known/jwks.json"})

    # Then
    assert (ROUTE.name, ROUTE.webhooks, ROUTE.webhook_secret, ROUTE.can_cancel) == ("fal", True, False, True)
    assert isinstance(settings, FalSettings)
    assert settings.base_url == "https://queue.fal.run"
    assert settings.jwks_url == "https://rest.fal.ai/.well-known/jwks.json"
    assert settings.model_id("1.0") == "alibaba/happy-horse/image-to-video"
    assert settings.estimate_cost_usd(Options(resolution="1080P", duration=10)) == 2.8
    assert settings.api_key_secret_name == "happyhorse/fal/api-key"
    assert (settings.jwks_cache_seconds, settings.webhook_tolerance_seconds) == (86400, 300)
    with pytest.raises(RouteConfigError, match="FAL_JWKS_CACHE_SECONDS"):
        ROUTE.load_settings({"FAL_JWKS_CACHE_SECONDS": "90000"})


# -- submit, status, result, cancel -------------------------------------------------------------


def test_submit_sends_fals_body_and_returns_the_queue_request_id(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given / When
    request = request_for(images, prompt="waves", seed=11).model_copy(update={"webhook_url": receiver.url()})
    request_id = fal.submit(request)

    # Then the simulator got the documented body, the webhook in the query, and the key
    [record] = simulator.state()["create_requests"]
    assert record["task_id"] == request_id
    assert record["body"] == {
        "image_url": images.url("landscape.jpg"),
        "resolution": "720p",
        "duration": 3,
        "enable_safety_checker": True,
        "prompt": "waves",
        "seed": 11,
    }
    assert simulator.task(request_id)["request"]["webhook_url"] == receiver.url()  # type: ignore[index]


def test_the_happy_path_through_status_and_result(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer
) -> None:
    # Given a request without a webhook
    request_id = fal.submit(request_for(images))

    # When it is polled to the end
    updates = poll(fal, request_id)

    # Then it went through fal's states to the result's video
    states = [u.state for u in updates]
    assert states[-1] is ProviderState.SUCCEEDED and set(states) <= {
        ProviderState.PENDING,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    }
    assert updates[-1].video_url == simulator.task(request_id)["video_url"]  # type: ignore[index]
    assert updates[-1].raw_status == "COMPLETED"


def test_version_1_1_polls_the_same_owner_and_app(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer
) -> None:
    # Given a 1.1 request (its model id has another path under alibaba/happy-horse)
    request_id = fal.submit(request_for(images, model="1.1"))

    # When / Then
    assert poll(fal, request_id, model="1.1")[-1].state is ProviderState.SUCCEEDED
    assert simulator.task(request_id)["model"] == "alibaba/happy-horse/v1.1/image-to-video"  # type: ignore[index]


def test_a_failed_request_reads_failed_with_fals_words(fal: FalProvider, images: ImageServer) -> None:
    # Given an image fal refuses once it runs
    request_id = fal.submit(request_for(images, "small.png"))

    # When / Then
    final = poll(fal, request_id)[-1]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert "300 px" in final.error.message


def test_an_unknown_request_is_gone(fal: FalProvider) -> None:
    # When / Then
    update = fal.status("no-such-request")
    assert (update.state, update.raw_status) == (ProviderState.GONE, "NOT_FOUND")


def test_a_429_is_retried_later_with_retry_after(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer
) -> None:
    # Given
    simulator.set_faults(submit_errors=[429], retry_after=9)

    # When / Then
    with pytest.raises(ProviderUnavailable) as raised:
        fal.submit(request_for(images))
    assert raised.value.retry_after == 9.0


def test_a_422_is_rejected_with_fals_detail(fal: FalProvider) -> None:
    # Given an image URL fal's validation refuses
    request = SubmitRequest(image_url="s3://bucket/key.png", options=Options())

    # When / Then
    with pytest.raises(ProviderRejected) as raised:
        fal.submit(request)
    assert raised.value.code == "PROVIDER_HTTP_422"
    assert raised.value.message == "fal answered 422: image_url: Input should be a valid URL"


def test_a_wrong_key_is_rejected(simulator: FalSimulator, http: httpx.Client, clock: Clock) -> None:
    class WrongKeys(Keys):
        def api_key(self) -> str:
            return "nope"

    config = FalSettings(base_url=simulator.url)
    with pytest.raises(ProviderRejected, match="401"):
        FalProvider(config, lambda: http, WrongKeys(), clock=clock).status("x")


def test_cancel_is_true_when_accepted_and_false_once_done(
    simulator: FalSimulator, http: httpx.Client, clock: Clock, images: ImageServer
) -> None:
    # Given a request still queued behind a slow first step
    with running_simulator(progress_delay=1.0) as slow:
        fal = adapter(slow, http, clock)
        request_id = fal.submit(request_for(images))

        # When it is cancelled twice, and an unknown one once
        outcomes = [fal.cancel(request_id), fal.cancel(request_id), fal.cancel("no-such-request")]
        final = fal.status(request_id)

    # Then only the first was accepted, and the request reads FAILED
    assert outcomes == [True, False, False]
    assert final.state is ProviderState.FAILED and final.error is not None
    assert "cancelled" in final.error.message


# -- webhooks ---------------------------------------------------------------------------------


def test_a_signed_ok_webhook_is_accepted(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a real webhook signed by the simulator
    delivery = webhook_of(fal, receiver, images)

    # When the adapter verifies and reads it
    update = fal.parse_callback(delivery.headers, delivery.body)

    # Then it is the finished request, with its video, and the JWKS was fetched once
    request_id = delivery.payload["request_id"]
    assert (update.provider_task_id, update.state, update.raw_status) == (
        request_id,
        ProviderState.SUCCEEDED,
        "OK",
    )
    assert update.video_url == simulator.task(request_id)["video_url"]  # type: ignore[index]
    assert simulator.jwks_requests == 1

    # And a second webhook is verified from the cache
    again = webhook_of(fal, receiver, images)
    assert fal.parse_callback(again.headers, again.body).state is ProviderState.SUCCEEDED
    assert simulator.jwks_requests == 1


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded-x", "padded-x"])
def test_keys_verify_whether_the_jwks_pads_x_or_not(
    padded: bool, http: httpx.Client, clock: Clock, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a JWKS whose `x` values carry `=` padding, or not
    with running_simulator(padded=padded) as simulator:
        fal = adapter(simulator, http, clock)
        assert simulator.jwks()["keys"][0]["x"].endswith("=") is padded

        # When a real webhook is verified
        delivery = webhook_of(fal, receiver, images)

        # Then the key was read either way
        assert fal.parse_callback(delivery.headers, delivery.body).state is ProviderState.SUCCEEDED


def test_an_error_webhook_is_failed_with_fals_words(
    fal: FalProvider, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given / When
    delivery = webhook_of(fal, receiver, images, "small.png")
    update = fal.parse_callback(delivery.headers, delivery.body)

    # Then
    assert (update.state, update.raw_status) == (ProviderState.FAILED, "ERROR")
    assert update.error is not None
    assert "Invalid status code: 422" in update.error.message
    assert "image_url: image is 200x200 px" in update.error.message


def test_an_ok_webhook_without_a_video_succeeds_without_one(
    fal: FalProvider, simulator: FalSimulator
) -> None:
    # Given an authentic webhook whose payload has no video
    body = json.dumps(
        {"request_id": "r-1", "gateway_request_id": "r-1", "status": "OK", "payload": {}}
    ).encode()

    # When / Then
    update = fal.parse_callback(signed(simulator, "r-1", body), body)
    assert (update.state, update.video_url) == (ProviderState.SUCCEEDED, None)


def signed(
    simulator: FalSimulator, request_id: str, body: bytes, *, at: float | None = None
) -> dict[str, str]:
    timestamp = int(at if at is not None else time.time())
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": "sim-user",
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": simulator.sign(request_id, body, timestamp),
    }


@pytest.mark.parametrize(
    "forge",
    [
        "tampered body",
        "forged signature",
        "other user id",
        "not hex",
        "short signature",
        "stale",
        "future",
        "not a number",
    ],
)
def test_forged_webhooks_are_unauthorized(
    forge: str, fal: FalProvider, images: ImageServer, receiver: WebhookReceiver, clock: Clock
) -> None:
    # Given a real webhook, altered
    delivery = webhook_of(fal, receiver, images)
    headers, body = dict(delivery.headers), delivery.body
    if forge == "tampered body":
        body = body.replace(b'"OK"', b'"ERROR"')
    elif forge == "forged signature":
        headers["x-fal-webhook-signature"] = "ab" * 64
    elif forge == "other user id":
        headers["x-fal-webhook-user-id"] = "someone-else"
    elif forge == "not hex":
        headers["x-fal-webhook-signature"] = "zz" * 64
    elif forge == "short signature":
        headers["x-fal-webhook-signature"] = headers["x-fal-webhook-signature"][:64]
    elif forge == "stale":
        clock.offset = 301
    elif forge == "future":
        clock.offset = -301
    elif forge == "not a number":
        headers["x-fal-webhook-timestamp"] = "yesterday"

    # When / Then
    with pytest.raises(Unauthorized):
        fal.parse_callback(headers, body)


@pytest.mark.parametrize(
    "header",
    [
        "x-fal-webhook-request-id",
        "x-fal-webhook-user-id",
        "x-fal-webhook-timestamp",
        "x-fal-webhook-signature",
    ],
)
def test_a_webhook_missing_a_header_is_unauthorized_before_any_key_is_fetched(
    header: str, fal: FalProvider, simulator: FalSimulator
) -> None:
    # Given
    body = b'{"request_id":"r-1","status":"OK","payload":{}}'
    headers = {name.lower(): value for name, value in signed(simulator, "r-1", body).items()}
    del headers[header]

    # When / Then
    with pytest.raises(Unauthorized, match=header):
        fal.parse_callback(headers, body)
    assert simulator.jwks_requests == 0


def test_an_unknown_key_refreshes_the_jwks_once_then_is_rejected(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer, receiver: WebhookReceiver, clock: Clock
) -> None:
    # Given the JWKS cached from a good webhook
    good = webhook_of(fal, receiver, images)
    fal.parse_callback(good.headers, good.body)
    assert simulator.jwks_requests == 1

    # When two webhooks signed with a key fal never published arrive, a while later
    clock.offset = 120
    stranger = Ed25519PrivateKey.generate()
    for _ in range(2):
        headers = dict(good.headers)
        message = "\n".join(
            [
                headers["x-fal-webhook-request-id"],
                headers["x-fal-webhook-user-id"],
                headers["x-fal-webhook-timestamp"],
                hashlib.sha256(good.body).hexdigest(),
            ]
        ).encode()
        headers["x-fal-webhook-signature"] = stranger.sign(message).hex()
        with pytest.raises(Unauthorized, match="no key"):
            fal.parse_callback(headers, good.body)

    # Then the JWKS was refetched once, not once per forgery
    assert simulator.jwks_requests == 2


def test_a_rotated_key_is_accepted_after_one_refresh(
    fal: FalProvider, simulator: FalSimulator, images: ImageServer, receiver: WebhookReceiver, clock: Clock
) -> None:
    # Given the JWKS cached, then fal rotating to a new key a while later
    good = webhook_of(fal, receiver, images)
    fal.parse_callback(good.headers, good.body)
    simulator.rotate_key(keep_previous=False)
    clock.offset = 90

    # When webhooks signed with the new key arrive
    rotated = webhook_of(fal, receiver, images)
    first = fal.parse_callback(rotated.headers, rotated.body)
    second = fal.parse_callback(rotated.headers, rotated.body)

    # Then the first refreshed the JWKS once and both were accepted
    assert first.state is second.state is ProviderState.SUCCEEDED
    assert simulator.jwks_requests == 2


def test_the_cache_expires_after_jwks_cache_seconds(
    simulator: FalSimulator, http: httpx.Client, clock: Clock, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given an adapter caching keys for 100 s
    fal = adapter(simulator, http, clock, jwks_cache_seconds=100)
    delivery = webhook_of(fal, receiver, images)
    fal.parse_callback(delivery.headers, delivery.body)

    # When the same webhook is verified 101 s later (inside the timestamp window)
    clock.offset = 101
    fal.parse_callback(delivery.headers, delivery.body)

    # Then the keys were fetched again
    assert simulator.jwks_requests == 2


def test_an_authentic_body_that_is_not_a_fal_webhook_is_a_bad_callback(
    fal: FalProvider, simulator: FalSimulator
) -> None:
    for body in (b'{"request_id":"r-1","status":"DONE"}', b"not json", b'{"request_id":"r-2","status":"OK"}'):
        with pytest.raises(BadCallback):
            fal.parse_callback(signed(simulator, "r-1", body), body)


def test_an_unreachable_jwks_is_retried_later(
    http: httpx.Client, clock: Clock, simulator: FalSimulator
) -> None:
    # Given an adapter whose JWKS URL answers nothing
    config = FalSettings(base_url=simulator.url, jwks_url="http://127.0.0.1:9/.well-known/jwks.json")
    fal = FalProvider(config, lambda: http, Keys(), clock=clock)
    body = b'{"request_id":"r-1","status":"OK","payload":{}}'

    # When / Then
    with pytest.raises(ProviderUnavailable):
        fal.parse_callback(signed(simulator, "r-1", body), body)


@pytest.mark.parametrize(
    ("entry", "usable"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}, True),
        ({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="}, True),
        ({"kty": "EC", "crv": "P-256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}, False),
        ({"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"}, False),
        ({"kty": "OKP", "crv": "Ed25519"}, False),
        ("not a key", False),
    ],
)
def test_jwk_keys_are_read_padded_or_not(entry: object, usable: bool) -> None:
    assert (jwk_ed25519_key(entry) is not None) is usable


# -- cold starts --------------------------------------------------------------------------------

COLD_START_SCRIPT = """
import base64, json, sys, time
from datetime import datetime, timezone
import httpx
from standardwebhooks import Webhook
from i2v.providers.magnific import MagnificProvider, MagnificSettings

secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
class Keys:
    def api_key(self): return "key"
    def webhook_secret(self): return secret
body = '{"task_id":"t-1","status":"COMPLETED","generated":["https://cdn.magnific.com/v.mp4"]}'
now = datetime.now(timezone.utc)
headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
           "webhook-signature": Webhook(secret).sign("msg_1", now, body)}
client = httpx.Client()
provider = MagnificProvider(MagnificSettings(), lambda: client, Keys())
assert provider.parse_callback(headers, body.encode()).state == "SUCCEEDED"
after_magnific = "cryptography" in sys.modules
import i2v.providers.fal
print(json.dumps({"magnific": after_magnific, "fal_import": "cryptography" in sys.modules}))
"""


def test_cryptography_is_loaded_only_to_verify_a_fal_webhook() -> None:
    # When the Magnific adapter verifies a webhook, then the fal module is imported, in a
    # fresh interpreter
    run = subprocess.run(
        [sys.executable, "-c", COLD_START_SCRIPT],
        env={"PYTHONPATH": str(REPO_ROOT / "layers" / "pipeline"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then neither loaded cryptography
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"magnific": False, "fal_import": False}
