"""The fal.ai simulator over real loopback HTTP(S): its queue wire format, signed webhooks
and JWKS, and the official `fal_client` library, unchanged, driving it over TLS with a
throwaway CA. An image server and a webhook receiver run beside it on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, ImageDraw

from local.simulators.fal import JWKS_PATH, MODELS, FalSimulator, Faults, validate_create_body

API_KEY = "fal-sim-test-key"
MODEL = MODELS[0]  # alibaba/happy-horse/image-to-video
REQUESTS = "/alibaba/happy-horse/requests"
WAIT_SECONDS = 30.0
MAX_LONG_SIDE = 256
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- loopback servers (also used by test_fal_provider.py) -----------------------------------


def picture(width: int, height: int, image_format: str) -> bytes:
    image = Image.new("RGB", (width, height), (20, 60, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(230, 80, 60))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


class ImageServer:
    """Serves fixed images at /images/<name>, like a presigned object URL would."""

    def __init__(self, images: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = images.get(self.path.split("?")[0].removeprefix("/images/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/images/{name}?X-Amz-Signature=abc"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookReceiver:
    """Records every POST; answers the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.answers: list[int] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._changed:
                    receiver.deliveries.append(
                        Delivery({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, task: str = "any") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callbacks/fal/{task}?token=tok-{task}"

    def wait_for(self, count: int) -> list[Delivery]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.deliveries) >= count, WAIT_SECONDS):
                raise AssertionError(f"expected {count} webhooks, got {len(self.deliveries)}")
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def eventually(read: Callable[[], Any], expected: Any, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"{value!r} never became {expected!r}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer(
        {
            "landscape.jpg": picture(800, 450, "JPEG"),
            "square.bmp": picture(400, 400, "BMP"),
            "small.png": picture(200, 200, "PNG"),
        }
    )
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def simulator() -> Iterator[FalSimulator]:
    with FalSimulator(api_key=API_KEY, render_max_long_side=MAX_LONG_SIDE, progress_delay=0.05) as running:
        yield running


@pytest.fixture
def client(simulator: FalSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, headers={"Authorization": f"Key {API_KEY}"}) as http:
        yield http


def submit(client: httpx.Client, webhook_url: str | None = None, **body: Any) -> dict[str, Any]:
    params = {"fal_webhook": webhook_url} if webhook_url else None
    response = client.post(f"/{MODEL}", json=body, params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def verify_signature(jwks: dict[str, Any], delivery: Delivery) -> None:
    """fal's documented check, written out with `cryptography`: raises unless a key verifies."""
    headers = delivery.headers
    message = "\n".join(
        [
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(delivery.body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    [key] = jwks["keys"]
    x = key["x"].rstrip("=")
    raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)


# -- throwaway TLS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed CA and a server certificate it issued for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fal simulator throwaway CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return tls


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- the queue's wire format --------------------------------------------------------------------


def test_submit_answers_the_queue_ids_and_urls_and_status_walks_to_the_result(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer
) -> None:
    # Given a request submitted to the model's full id
    answer = submit(client, image_url=images.url("landscape.jpg"), resolution="720p", duration=3, seed=7)

    # Then the answer names the queue's id and the requests URLs under owner/app only
    request_id = answer["request_id"]
    base = f"{simulator.url}{REQUESTS}/{request_id}"
    assert answer["gateway_request_id"] == request_id
    assert (answer["status"], answer["response_url"]) == ("IN_QUEUE", base)
    assert (answer["status_url"], answer["cancel_url"]) == (f"{base}/status", f"{base}/cancel")

    # When the status is read until COMPLETED
    first = client.get(f"{REQUESTS}/{request_id}/status")
    simulator.wait_for_status(request_id)
    done = client.get(f"{REQUESTS}/{request_id}/status", params={"logs": "1"})
    result = client.get(f"{REQUESTS}/{request_id}")

    # Then it answered 202 while open, 200 once done, with logs on request, then the video
    assert first.status_code == 202 and first.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert first.json()["logs"] is None
    assert done.status_code == 200
    body = done.json()
    assert (body["status"], body["request_id"]) == ("COMPLETED", request_id)
    assert [log["message"] for log in body["logs"]] == ["Generating video", "Video ready"]
    assert body["metrics"]["inference_time"] >= 0 and "error" not in body
    assert result.status_code == 200
    assert result.json()["seed"] == 7
    video = result.json()["video"]
    assert video["content_type"] == "video/mp4" and video["url"].startswith(simulator.url)
    assert httpx.get(video["url"]).content[4:8] == b"ftyp"
    assert simulator.state()["create_requests"][0]["body"]["resolution"] == "720p"


def test_a_queued_request_reports_its_position(images: ImageServer) -> None:
    # Given two requests queued behind a slow first step
    slow = FalSimulator(api_key=API_KEY, render_max_long_side=MAX_LONG_SIDE, progress_delay=2.0)
    with slow, httpx.Client(base_url=slow.url, headers={"Authorization": f"Key {API_KEY}"}) as http:
        first = submit(http, image_url=images.url("landscape.jpg"), duration=3)
        second = submit(http, image_url=images.url("landscape.jpg"), duration=3)

        # When their statuses are read
        positions = [
            http.get(f"{REQUESTS}/{answer['request_id']}/status").json()["queue_position"]
            for answer in (first, second)
        ]

    # Then the later one has one request ahead of it
    assert positions == [0, 1]


@pytest.mark.parametrize("header", [None, "Key wrong", f"Bearer {API_KEY}"])
def test_a_missing_or_wrong_key_is_401(simulator: FalSimulator, header: str | None) -> None:
    # When a request comes without the right `Key` credentials
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{simulator.url}/{MODEL}", json={"image_url": "https://x/a.png"}, headers=headers)

    # Then it is refused the way fal answers, and nothing is queued
    assert response.status_code == 401 and "detail" in response.json()
    assert simulator.state()["counters"]["tasks_created"] == 0


def test_validation_errors_are_fastapi_detail_lists(simulator: FalSimulator, client: httpx.Client) -> None:
    # When a body breaks every rule
    response = client.post(
        f"/{MODEL}", json={"prompt": "p" * 2501, "resolution": "1080P", "duration": 16, "seed": -1}
    )

    # Then it is a 422 naming each field, with the input rules taken from the adapter
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [problem["loc"] for problem in detail] == [
        ["body", "image_url"],
        ["body", "prompt"],
        ["body", "resolution"],
        ["body", "duration"],
        ["body", "seed"],
    ]
    assert detail[0]["type"] == "missing"
    assert "'720p' or '1080p'" in detail[2]["msg"]


def test_a_data_url_image_is_refused_as_only_urls_are_documented(client: httpx.Client) -> None:
    # PROVIDERS.md gives fal's `image_url` as a URL: the core could decode a data: URL, the
    # route does not take one.
    response = client.post(f"/{MODEL}", json={"image_url": "data:image/png;base64,AAAA"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image_url"]


def test_validate_create_body_applies_the_defaults_and_takes_numeric_strings() -> None:
    # When / Then
    request = validate_create_body({"image_url": "https://x/a.png", "duration": "8"}, "https://h/cb")
    assert not isinstance(request, list)
    assert (request.resolution, request.duration, request.enable_safety_checker) == ("1080P", 8, True)
    assert request.webhook_url == "https://h/cb"


def test_unknown_ids_and_paths_are_404(simulator: FalSimulator, client: httpx.Client) -> None:
    # When / Then
    assert client.get(f"{REQUESTS}/no-such-id/status").status_code == 404
    assert client.get(f"{REQUESTS}/no-such-id").json() == {"detail": "Request not found"}
    assert client.put(f"{REQUESTS}/no-such-id/cancel").json() == {"status": "NOT_FOUND"}
    assert client.post("/fal-ai/flux/dev", json={}).status_code == 404


def test_cancel_stops_a_queued_request_and_refuses_a_finished_one(
    images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a request still in the queue (its first step takes 0.3 s)
    with (
        FalSimulator(api_key=API_KEY, progress_delay=0.3) as simulator,
        httpx.Client(base_url=simulator.url, headers={"Authorization": f"Key {API_KEY}"}) as client,
    ):
        answer = submit(client, receiver.url(), image_url=images.url("landscape.jpg"), duration=3)
        request_id = answer["request_id"]

        # When it is cancelled, then cancelled again
        cancelled = client.put(f"{REQUESTS}/{request_id}/cancel")
        again = client.put(f"{REQUESTS}/{request_id}/cancel")

        # Then the first is accepted, the request ends with an error, the second is too late
        assert (cancelled.status_code, cancelled.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
        status = client.get(f"{REQUESTS}/{request_id}/status").json()
        assert status["status"] == "COMPLETED" and status["error"] == "Request was cancelled"
        assert client.get(f"{REQUESTS}/{request_id}").status_code == 400
        time.sleep(0.8)  # past the first step: the worker, replaced, stops without a webhook
        assert receiver.deliveries == []
        assert simulator.state()["tasks_by_status"]["FAILED"] == 1


# -- webhooks and the JWKS ----------------------------------------------------------------------


def test_a_finished_request_posts_one_signed_ok_webhook(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a request with a webhook
    request_id = submit(client, receiver.url(), image_url=images.url("square.bmp"), duration=3)["request_id"]

    # When it finishes
    [delivery] = receiver.wait_for(1)

    # Then one OK webhook carries the result, signed as fal documents, verifiable with the JWKS
    payload = delivery.payload
    assert (payload["request_id"], payload["gateway_request_id"], payload["status"]) == (
        request_id,
        request_id,
        "OK",
    )
    assert payload["payload"]["video"]["url"] == simulator.task(request_id)["video_url"]  # type: ignore[index]
    assert delivery.headers["x-fal-webhook-request-id"] == request_id
    assert delivery.headers["x-fal-webhook-user-id"] == "sim-user"
    assert abs(int(delivery.headers["x-fal-webhook-timestamp"]) - time.time()) < 30
    jwks = httpx.get(f"{simulator.url}{JWKS_PATH}").json()
    assert jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["crv"] == "Ed25519"
    assert "=" not in jwks["keys"][0]["x"]
    verify_signature(jwks, delivery)
    assert simulator.jwks_requests == 1
    time.sleep(0.2)
    assert len(receiver.deliveries) == 1  # IN_QUEUE and IN_PROGRESS post nothing


def test_a_failed_request_posts_an_error_webhook_with_the_detail(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given an image fal would refuse (200 px sides)
    request_id = submit(client, receiver.url(), image_url=images.url("small.png"), duration=3)["request_id"]

    # When it fails
    [delivery] = receiver.wait_for(1)

    # Then the webhook says ERROR with fal's detail list; status and result agree
    payload = delivery.payload
    assert (payload["status"], payload["error"]) == ("ERROR", "Invalid status code: 422")
    [problem] = payload["payload"]["detail"]
    assert problem["loc"] == ["body", "image_url"] and "at least 300 px" in problem["msg"]
    status = client.get(f"{REQUESTS}/{request_id}/status").json()
    assert status["status"] == "COMPLETED" and "300 px" in status["error"]
    assert client.get(f"{REQUESTS}/{request_id}").status_code == 422


def test_webhooks_are_retried_with_a_fresh_signature_each_time(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a receiver that fails twice, and fal's retry count by default
    assert simulator.faults()["webhook_retries"] == 10
    receiver.answers = [503, 500]

    # When a request finishes
    submit(client, receiver.url(), image_url=images.url("landscape.jpg"), duration=3)
    deliveries = receiver.wait_for(3)

    # Then the same webhook came three times, each attempt verifiable
    assert len({delivery.body for delivery in deliveries}) == 1
    jwks = simulator.jwks()
    for delivery in deliveries:
        verify_signature(jwks, delivery)
    eventually(
        lambda: [(r["attempt"], r["response_status"]) for r in simulator.state()["webhooks"]],
        [(1, 503), (2, 500), (3, 200)],
    )


def test_dropped_and_duplicated_webhooks(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given the first request's webhook dropped, and webhooks sent twice
    simulator.set_faults(drop_webhooks=1, duplicate_webhooks=True)

    # When two requests finish
    dropped = submit(client, receiver.url(), image_url=images.url("landscape.jpg"), duration=3)
    simulator.wait_for_status(dropped["request_id"])
    doubled = submit(client, receiver.url(), image_url=images.url("landscape.jpg"), duration=3)
    deliveries = receiver.wait_for(2)

    # Then the first posted nothing and the second posted twice
    assert {d.payload["request_id"] for d in deliveries} == {doubled["request_id"]}
    assert simulator.state()["counters"]["webhooks_dropped"] == 1


def test_submit_errors_carry_retry_after(simulator: FalSimulator, client: httpx.Client) -> None:
    # Given an injected 429
    simulator.set_faults(submit_errors=[429], retry_after=7)

    # When / Then
    response = client.post(f"/{MODEL}", json={"image_url": "https://x/a.png"})
    assert (response.status_code, response.headers["retry-after"]) == (429, "7")
    assert response.json() == {"detail": "Too Many Requests"}
    with pytest.raises(ValueError, match="submit_errors"):
        Faults().updated({"submit_errors": [418]})


def test_status_errors_answer_the_next_status_and_result_reads(
    simulator: FalSimulator, client: httpx.Client, images: ImageServer
) -> None:
    # Given a finished request, then a 429 with Retry-After and a 503 for the next reads
    request_id = submit(client, image_url=images.url("landscape.jpg"), duration=3)["request_id"]
    simulator.wait_for_status(request_id)
    simulator.set_faults(status_errors=[429, 503], retry_after=6)

    # When the status, then the result, then the status again are read
    status = client.get(f"{REQUESTS}/{request_id}/status")
    result = client.get(f"{REQUESTS}/{request_id}")
    after = client.get(f"{REQUESTS}/{request_id}/status")

    # Then the first two answered fal's error bodies, the third went through
    assert (status.status_code, status.json(), status.headers["retry-after"]) == (
        429,
        {"detail": "Too Many Requests"},
        "6",
    )
    assert (result.status_code, result.json()) == (503, {"detail": "Service Unavailable"})
    assert "retry-after" not in result.headers
    assert (after.status_code, after.json()["status"]) == (200, "COMPLETED")


def test_a_forgotten_request_is_not_found_and_posts_no_webhook(
    images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given a request still in the queue (its first step takes 0.3 s), with a webhook
    with (
        FalSimulator(api_key=API_KEY, progress_delay=0.3) as simulator,
        httpx.Client(base_url=simulator.url, headers={"Authorization": f"Key {API_KEY}"}) as client,
    ):
        request_id = submit(client, receiver.url(), image_url=images.url("landscape.jpg"), duration=3)[
            "request_id"
        ]

        # When it is forgotten
        assert httpx.post(f"{simulator.url}/_sim/forget/{request_id}").status_code == 200

        # Then status, result and cancel answer as for an unknown id, and no webhook comes
        for path in (f"{request_id}/status", request_id):
            response = client.get(f"{REQUESTS}/{path}")
            assert (response.status_code, response.json()) == (404, {"detail": "Request not found"})
        cancel = client.put(f"{REQUESTS}/{request_id}/cancel")
        assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
        time.sleep(1.0)  # past both steps: the worker, forgotten, stops without a webhook
        assert receiver.deliveries == []


def test_the_jwks_pads_x_when_asked_and_lists_rotated_keys() -> None:
    # Given a simulator serving padded `x` values
    with FalSimulator(api_key=API_KEY, jwks_padded=True) as simulator:
        # When its key rotates
        before = httpx.get(f"{simulator.url}{JWKS_PATH}").json()["keys"]
        simulator.rotate_key()
        after = httpx.get(f"{simulator.url}{JWKS_PATH}").json()["keys"]
        simulator.rotate_key(keep_previous=False)
        replaced = simulator.jwks()["keys"]

    # Then x keeps its '=' padding and the JWKS lists the old and new keys, then only the new
    assert before[0]["x"].endswith("=")
    assert [key["x"] for key in after[:1]] == [before[0]["x"]] and len(after) == 2
    assert len(replaced) == 1 and replaced[0]["x"] not in {key["x"] for key in after}


# -- the official client over TLS ---------------------------------------------------------------

# Run in a fresh interpreter: fal_client reads FAL_QUEUE_RUN_HOST when it is imported.
FAL_CLIENT_SCRIPT = """
import json, sys
import fal_client

key, app, image_url, webhook_url = sys.argv[1:5]
client = fal_client.SyncClient(key=key)
handle = client.submit(app, arguments={"image_url": image_url, "resolution": "720p", "duration": 3},
                       webhook_url=webhook_url)
first = client.status(app, handle.request_id, with_logs=True)
result = handle.get(interval=0.05)
final = client.status(app, handle.request_id, with_logs=True)
queued = client.submit(app, arguments={"image_url": image_url, "duration": 3})
client.cancel(app, queued.request_id)
try:
    client.cancel(app, handle.request_id)
    late = None
except fal_client.FalClientHTTPError as exc:
    late = exc.status_code
print(json.dumps({
    "request_id": handle.request_id,
    "status_url": handle.status_url,
    "first": type(first).__name__,
    "final": type(final).__name__,
    "logs": [log["message"] for log in final.logs],
    "result": result,
    "queued": queued.request_id,
    "late_cancel": late,
}))
"""


def test_the_official_fal_client_drives_the_simulator_over_tls(
    tls: Tls, images: ImageServer, receiver: WebhookReceiver
) -> None:
    # Given the simulator serving HTTPS with a certificate from a throwaway CA
    with FalSimulator(
        "127.0.0.1",
        api_key=API_KEY,
        ssl_context=tls.server_context(),
        render_max_long_side=MAX_LONG_SIDE,
        progress_delay=0.3,
    ) as simulator:
        assert simulator.url.startswith("https://127.0.0.1:")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.lower().endswith("_proxy") and not key.startswith("FAL_")
        }
        env |= {
            "FAL_QUEUE_RUN_HOST": simulator.url.removeprefix("https://"),
            "FAL_RUN_HOST": simulator.url.removeprefix("https://"),
            "SSL_CERT_FILE": str(tls.ca_file),  # httpx (under fal_client) trusts only this CA
            "NO_PROXY": "127.0.0.1,localhost",
        }

        # When fal_client, unchanged, submits, polls, reads the result and cancels
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                FAL_CLIENT_SCRIPT,
                API_KEY,
                MODEL,
                images.url("landscape.jpg"),
                receiver.url(),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout)
        [delivery] = receiver.wait_for(1)
        queued = simulator.task(seen["queued"])
        base = simulator.url

    # Then every call reached the simulator over TLS and read its answers as fal's
    assert seen["status_url"] == f"{base}{REQUESTS}/{seen['request_id']}/status"
    assert seen["first"] in ("Queued", "InProgress") and seen["final"] == "Completed"
    assert seen["logs"] == ["Generating video", "Video ready"]
    assert seen["result"]["video"]["url"].startswith("https://127.0.0.1:")
    assert seen["late_cancel"] == 400
    assert queued is not None and queued["failure_reason"] == "Request was cancelled"
    assert delivery.payload["request_id"] == seen["request_id"]
    assert API_KEY not in run.stderr


def test_a_plain_http_client_cannot_talk_to_the_tls_simulator(tls: Tls) -> None:
    # Given the simulator on HTTPS
    with FalSimulator(api_key=API_KEY, ssl_context=tls.server_context()) as simulator:
        # When a client trusting the CA calls it, and one that does not
        trusted = httpx.get(
            f"{simulator.url}{JWKS_PATH}", verify=ssl.create_default_context(cafile=tls.ca_file)
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{simulator.url}{JWKS_PATH}", verify=ssl.create_default_context())

    # Then only the first gets an answer
    assert trusted.status_code == 200


# -- the command line ---------------------------------------------------------------------------


def test_the_command_line_serves_https_until_interrupted(tls: Tls) -> None:
    # Given the simulator started as its documented command, with TLS, on any free port
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.simulators.fal",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--tls-cert",
            str(tls.cert_file),
            "--tls-key",
            str(tls.key_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(https://127\.0\.0\.1:\d+)", line)
        assert match, line

        # When it is called, then interrupted
        verify = ssl.create_default_context(cafile=tls.ca_file)
        jwks = httpx.get(f"{match.group(1)}{JWKS_PATH}", verify=verify)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)

        # Then it answered over TLS, stopped cleanly, and never logged the key
        assert len(jwks.json()["keys"]) == 1
        assert process.returncode == 0, stderr
        assert f"GET {JWKS_PATH} -> 200" in stderr
        assert API_KEY not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
