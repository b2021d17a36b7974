"""The Magnific simulator, over real loopback HTTP: an image server, the simulator and a
webhook receiver, each a real server on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import av
import httpx
import pytest
from PIL import Image, ImageDraw
from standardwebhooks import Webhook

from local.simulators.magnific import (
    Faults,
    MagnificSimulator,
    TaskFailed,
    check_image,
    validate_create_body,
    webhook_signer,
)

API_KEY = "sim-test-key"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RAW_SECRET = "a-dashboard-secret-used-as-raw-bytes"
CREATE_PATH = "/v1/ai/image-to-video/happy-horse-1"
WAIT_SECONDS = 30.0
MAX_LONG_SIDE = 256


# -- loopback servers ----------------------------------------------------------------------


def _picture(width: int, height: int, image_format: str) -> bytes:
    image = Image.new("RGB", (width, height), (20, 60, 120))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 24):
        draw.line([(x, 0), (x, height)], fill=(250, 200, 40), width=4)
    draw.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=(230, 80, 60))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


class _ImageServer:
    """Serves fixed images at /images/<name>, like a presigned object URL would."""

    def __init__(self, images: dict[str, bytes]) -> None:
        handler = self._handler(images)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @staticmethod
    def _handler(images: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("?")[0].removeprefix("/images/")
                body = images.get(name)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/images/{name}?X-Amz-Signature=abc"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class _WebhookReceiver:
    """Records every POST; answers the queued statuses first, then 204."""

    def __init__(self) -> None:
        self.deliveries: list[_Delivery] = []
        self.answers: list[int] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._changed:
                    receiver.deliveries.append(
                        _Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.answers.pop(0) if receiver.answers else 204
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler

    def url(self, task: str = "any") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callbacks/{task}?token=tok-{task}"

    def wait_for(self, condition: Callable[[list[_Delivery]], bool]) -> list[_Delivery]:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.deliveries), WAIT_SECONDS):
                raise AssertionError(f"webhooks never matched; got {self.deliveries}")
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def images() -> Iterator[_ImageServer]:
    server = _ImageServer(
        {
            "landscape.jpg": _picture(800, 450, "JPEG"),
            "portrait.png": _picture(450, 800, "PNG"),
            "square.webp": _picture(400, 400, "WEBP"),
            "small.png": _picture(200, 200, "PNG"),
            "too-wide.png": _picture(900, 300, "PNG"),
            "animated.gif": _picture(400, 400, "GIF"),
        }
    )
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[_WebhookReceiver]:
    server = _WebhookReceiver()
    yield server
    server.close()


def _simulator(secret: str = STANDARD_SECRET) -> MagnificSimulator:
    return MagnificSimulator(
        api_key=API_KEY,
        webhook_secret=secret,
        render_max_long_side=MAX_LONG_SIDE,
        progress_delay=0.0,
    )


@pytest.fixture
def simulator() -> Iterator[MagnificSimulator]:
    with _simulator() as running:
        yield running


@pytest.fixture
def client(simulator: MagnificSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, headers={"x-magnific-api-key": API_KEY}) as http:
        yield http


def _create(client: httpx.Client, **body: Any) -> str:
    response = client.post(CREATE_PATH, json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def _poll_until_finished(client: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(f"{CREATE_PATH}/{task_id}").json()["data"]
        if data["status"] in ("COMPLETED", "FAILED"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish in {WAIT_SECONDS} s")


def _eventually(read: Callable[[], Any], expected: Any) -> None:
    """Wait (bounded) until `read()` returns `expected`: the simulator records a webhook just
    after the receiver has answered it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"{value!r} != {expected!r}"
        time.sleep(0.02)


def _statuses(deliveries: list[_Delivery]) -> list[str]:
    return [delivery.payload["status"] for delivery in deliveries]


def _finished(deliveries: list[_Delivery]) -> bool:
    return any(status in ("COMPLETED", "FAILED") for status in _statuses(deliveries))


# -- the happy path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "verifying_key", "image", "expected_size"),
    [
        (STANDARD_SECRET, STANDARD_SECRET, "landscape.jpg", (256, 144)),
        (RAW_SECRET, RAW_SECRET.encode(), "portrait.png", (144, 256)),
    ],
    ids=["whsec-secret-landscape", "raw-secret-portrait"],
)
def test_a_task_renders_a_real_video_and_signs_its_webhooks(
    images: _ImageServer,
    receiver: _WebhookReceiver,
    secret: str,
    verifying_key: str | bytes,
    image: str,
    expected_size: tuple[int, int],
) -> None:
    # Given a simulator signing with this secret
    with _simulator(secret) as simulator, httpx.Client(base_url=simulator.url) as client:
        # When a task is created with a webhook
        created = client.post(
            CREATE_PATH,
            headers={"x-magnific-api-key": API_KEY},
            json={
                "image_url": images.url(image),
                "prompt": "a horse runs",
                "resolution": "720P",
                "duration": 3,
                "webhook_url": receiver.url(),
            },
        )

        # Then the answer is the provider's create response
        assert created.status_code == 200
        task_id = created.json()["data"]["task_id"]
        assert created.json() == {"data": {"task_id": task_id, "status": "CREATED", "generated": []}}
        assert uuid.UUID(task_id).version == 4

        # And the webhooks say IN_PROGRESS then COMPLETED, bare task objects, each verifiable
        deliveries = receiver.wait_for(_finished)
        assert _statuses(deliveries) == ["IN_PROGRESS", "COMPLETED"]
        for delivery in deliveries:
            assert Webhook(verifying_key).verify(delivery.body, delivery.headers) == delivery.payload
            assert re.fullmatch(r"msg_\w+", delivery.headers["webhook-id"])
            assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
            assert delivery.headers["webhook-signature"].startswith("v1,")
            assert set(delivery.payload) == {"task_id", "status", "generated"}
            assert delivery.payload["task_id"] == task_id
        assert deliveries[0].headers["webhook-id"] != deliveries[1].headers["webhook-id"]
        completed = deliveries[1].payload
        assert completed["generated"] == [f"{simulator.url}/videos/{task_id}.mp4"]

        # And the status endpoint agrees
        status = client.get(f"{CREATE_PATH}/{task_id}", headers={"x-magnific-api-key": API_KEY})
        assert status.json() == {"data": completed}

        # And the video is an H.264 MP4 of the requested duration in the image's aspect
        video = httpx.get(completed["generated"][0])
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        assert int(video.headers["content-length"]) == len(video.content)
        with av.open(io.BytesIO(video.content), mode="r") as container:
            stream = container.streams.video[0]
            frame_count = sum(1 for _ in container.decode(stream))
            assert stream.codec_context.name == "h264"
            assert (stream.width, stream.height) == expected_size
            assert frame_count == 3 * 24
            assert stream.duration is not None and stream.time_base is not None
            assert abs(float(stream.duration * stream.time_base) - 3.0) <= 1 / 24


def test_a_webhook_signed_with_another_secret_does_not_verify(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given a finished task's webhooks
    _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    deliveries = receiver.wait_for(_finished)

    # When / Then they fail verification with any other key, or with a changed body
    with pytest.raises(Exception, match="signature"):
        Webhook(RAW_SECRET.encode()).verify(deliveries[0].body, deliveries[0].headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(STANDARD_SECRET).verify(deliveries[0].body + b" ", deliveries[0].headers)


def test_defaults_apply_and_the_older_header_and_model_are_accepted(
    simulator: MagnificSimulator, images: _ImageServer
) -> None:
    # Given a client using the Freepik-era header name and the 1.1 model path
    with httpx.Client(base_url=simulator.url, headers={"x-freepik-api-key": API_KEY}) as client:
        # When a task is created with nothing but the image
        response = client.post(
            "/v1/ai/image-to-video/happy-horse-1-1", json={"image_url": images.url("square.webp")}
        )

        # Then it is accepted with the provider's defaults and completes without any webhook
        assert response.status_code == 200
        task_id = response.json()["data"]["task_id"]
        task = simulator.wait_for_status(task_id)
        assert task["status"] == "COMPLETED"
        assert task["model"] == "happy-horse-1-1"
        assert task["request"] == {
            "image_url": images.url("square.webp"),
            "prompt": "",
            "resolution": "1080P",
            "duration": 5,
            "seed": None,
            "webhook_url": None,
        }
        # And the task lives under its own model's path only
        listed = client.get("/v1/ai/image-to-video/happy-horse-1-1").json()
        assert listed == {"data": [{"task_id": task_id, "status": "COMPLETED"}]}
        assert client.get(f"{CREATE_PATH}/{task_id}").status_code == 404
    assert simulator.state()["counters"]["webhooks_sent"] == 0


def test_list_shows_tasks_newest_first_and_unknown_ids_are_not_found(
    client: httpx.Client, images: _ImageServer
) -> None:
    # Given two tasks
    first = _create(client, image_url=images.url("square.webp"), duration=3)
    second = _create(client, image_url=images.url("square.webp"), duration=3)

    # When the tasks are listed, and an unknown one is asked for
    listed = client.get(CREATE_PATH)
    unknown = client.get(f"{CREATE_PATH}/{uuid.uuid4()}")

    # Then
    assert [task["task_id"] for task in listed.json()["data"]] == [second, first]
    assert all(set(task) == {"task_id", "status"} for task in listed.json()["data"])
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "Not found"}


def test_the_video_answers_head_and_is_not_found_before_completion(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a completed task
    task_id = _create(client, image_url=images.url("square.webp"), duration=3)
    simulator.wait_for_status(task_id)
    video_url = f"{simulator.url}/videos/{task_id}.mp4"

    # When the video is asked for with HEAD (no API key, like a CDN), and an unknown one with GET
    head = httpx.head(video_url)
    missing = httpx.get(f"{simulator.url}/videos/{uuid.uuid4()}.mp4")

    # Then
    assert head.status_code == 200
    assert head.headers["content-type"] == "video/mp4"
    assert int(head.headers["content-length"]) == len(httpx.get(video_url).content) > 0
    assert head.content == b""
    assert missing.status_code == 404


# -- the provider's refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-magnific-api-key": "wrong"}, {"authorization": f"Bearer {API_KEY}"}],
    ids=["missing", "wrong", "other-header"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", CREATE_PATH), ("GET", CREATE_PATH), ("GET", f"{CREATE_PATH}/{uuid.uuid4()}")],
    ids=["create", "list", "status"],
)
def test_a_missing_or_wrong_api_key_is_refused(
    simulator: MagnificSimulator, headers: dict[str, str], method: str, path: str
) -> None:
    # Given / When
    response = httpx.request(method, simulator.url + path, headers=headers, json={"image_url": "x"})

    # Then
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid API key"}
    assert simulator.state()["counters"]["create_requests"] == 0


@pytest.mark.parametrize(
    ("body", "invalid_names"),
    [
        ({"image_url": "http://127.0.0.1/a.png", "duration": 20}, ["duration"]),
        ({"image_url": "http://127.0.0.1/a.png", "duration": "5"}, ["duration"]),
        ({"image_url": "http://127.0.0.1/a.png", "resolution": "4K"}, ["resolution"]),
        ({"prompt": "a horse"}, ["image_url"]),
        ({"image_url": "not a uri"}, ["image_url"]),
        ({"image_url": "http://127.0.0.1/a.png", "prompt": "x" * 2501}, ["prompt"]),
        ({"image_url": "http://127.0.0.1/a.png", "seed": -1}, ["seed"]),
        ({"image_url": "http://127.0.0.1/a.png", "seed": None}, ["seed"]),
        ({"image_url": "http://127.0.0.1/a.png", "webhook_url": "/callbacks/1"}, ["webhook_url"]),
        ({"duration": 2, "resolution": "480P"}, ["image_url", "resolution", "duration"]),
    ],
)
def test_an_invalid_body_is_refused_with_invalid_params(
    simulator: MagnificSimulator, client: httpx.Client, body: dict[str, Any], invalid_names: list[str]
) -> None:
    # Given / When
    response = client.post(CREATE_PATH, json=body)

    # Then the provider's problem+json names every invalid field, and no task starts
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["message"] == "Your request parameters didn't validate."
    assert [param["name"] for param in problem["invalid_params"]] == invalid_names
    assert all(param["reason"] for param in problem["invalid_params"])
    state = simulator.state()
    assert state["counters"] == {**state["counters"], "create_requests": 1, "tasks_created": 0}
    assert state["create_requests"][0]["response_status"] == 400


def test_a_body_that_is_not_json_is_refused(client: httpx.Client) -> None:
    # Given / When
    response = client.post(CREATE_PATH, content=b"image_url=x")

    # Then
    assert response.status_code == 400
    assert response.json()["invalid_params"] == [{"name": "body", "reason": "must be a JSON object"}]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("small.png", "each side must be >= 300 px"),
        ("too-wide.png", "aspect ratio"),
        ("animated.gif", "format is not supported"),
        ("missing.png", "HTTP 404"),
    ],
)
def test_an_image_that_breaks_the_rules_fails_the_task(
    simulator: MagnificSimulator,
    client: httpx.Client,
    images: _ImageServer,
    receiver: _WebhookReceiver,
    image: str,
    reason: str,
) -> None:
    # Given / When a task whose image cannot be used
    task_id = _create(client, image_url=images.url(image), duration=3, webhook_url=receiver.url())

    # Then it ends FAILED without ever running, says so by webhook and status, with no video
    deliveries = receiver.wait_for(_finished)
    assert [delivery.payload for delivery in deliveries] == [
        {"task_id": task_id, "status": "FAILED", "generated": []}
    ]
    assert _poll_until_finished(client, task_id) == deliveries[0].payload
    task = simulator.task(task_id)
    assert task is not None and reason in task["failure_reason"]


def test_an_unreachable_image_fails_the_task(simulator: MagnificSimulator, client: httpx.Client) -> None:
    # Given an image URL nobody listens on
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/gone.png"
    closed.server_close()

    # When / Then
    task_id = _create(client, image_url=url, duration=3)
    task = simulator.wait_for_status(task_id)
    assert task["status"] == "FAILED"
    assert "could not be fetched" in task["failure_reason"]


# -- fault injection -----------------------------------------------------------------------


def test_submit_errors_answer_in_order_with_the_provider_bodies_then_success(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a 503 then a 429 (with Retry-After) injected over HTTP
    injected = httpx.post(
        f"{simulator.url}/_sim/faults", json={"submit_errors": [503, 429], "retry_after": 2}
    )
    assert injected.status_code == 200
    assert injected.json()["faults"]["submit_errors"] == [503, 429]
    body = {"image_url": images.url("square.webp"), "duration": 3}

    # When the client creates three times
    answers = [client.post(CREATE_PATH, json=body) for _ in range(3)]

    # Then the first two are the provider's errors and the third creates the task
    assert answers[0].status_code == 503
    assert answers[0].json() == {"message": "Service Unavailable. Please try again later."}
    assert "retry-after" not in answers[0].headers
    assert answers[1].status_code == 429
    assert answers[1].json() == {"message": "Too many requests"}
    assert answers[1].headers["retry-after"] == "2"
    assert answers[2].status_code == 200
    state = httpx.get(f"{simulator.url}/_sim/state").json()
    assert state["counters"]["create_requests"] == 3
    assert state["counters"]["tasks_created"] == 1
    assert [record["response_status"] for record in state["create_requests"]] == [503, 429, 200]
    assert [record["body"] for record in state["create_requests"]] == [body] * 3
    assert state["faults"]["submit_errors"] == []


def test_status_errors_answer_the_next_status_reads_but_not_the_list(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a task, then a 429 (with Retry-After) and a 503 for the next status reads
    task_id = _create(client, image_url=images.url("square.webp"), duration=3)
    simulator.set_faults(status_errors=[429, 503], retry_after=4)

    # When the list is read, then the task's status three times
    listed = client.get(CREATE_PATH)
    reads = [client.get(f"{CREATE_PATH}/{task_id}") for _ in range(3)]

    # Then the list went through and the reads answered the provider's bodies in order
    assert [task["task_id"] for task in listed.json()["data"]] == [task_id]
    assert [(r.status_code, r.json(), r.headers.get("retry-after")) for r in reads[:2]] == [
        (429, {"message": "Too many requests"}, "4"),
        (503, {"message": "Service Unavailable. Please try again later."}, None),
    ]
    assert reads[2].status_code == 200 and reads[2].json()["data"]["task_id"] == task_id


def test_a_forgotten_task_is_not_found_and_leaves_the_list(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given a completed task, and its webhooks received
    task_id = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    receiver.wait_for(_finished)

    # When it is forgotten
    assert httpx.post(f"{simulator.url}/_sim/forget/{task_id}").json() == {"forgotten": task_id}

    # Then it answers as an unknown id, is not listed, and its video is gone
    unknown = client.get(f"{CREATE_PATH}/{task_id}")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Not found"})
    assert client.get(CREATE_PATH).json() == {"data": []}
    assert httpx.get(f"{simulator.url}/videos/{task_id}.mp4").status_code == 404


def test_dropped_webhooks_leave_the_task_completed_and_the_receiver_empty(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given the next task's webhooks are lost
    simulator.set_faults(drop_webhooks=1)

    # When a task with a webhook runs, then another one
    lost = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    assert _poll_until_finished(client, lost)["status"] == "COMPLETED"
    delivered = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())

    # Then only the second task's webhooks arrive
    deliveries = receiver.wait_for(_finished)
    assert {delivery.payload["task_id"] for delivery in deliveries} == {delivered}
    _eventually(lambda: simulator.state()["counters"]["webhooks_dropped"], 2)


def test_failed_tasks_are_injected_for_the_next_tasks_only(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given the next task is made to fail
    simulator.set_faults(fail_tasks=1)

    # When two tasks run
    failing = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    failed = _poll_until_finished(client, failing)
    working = _create(client, image_url=images.url("square.webp"), duration=3)

    # Then the first fails after it started, with a reason, and the second completes
    assert failed == {"task_id": failing, "status": "FAILED", "generated": []}
    assert _statuses(receiver.wait_for(_finished)) == ["IN_PROGRESS", "FAILED"]
    assert "fault injection" in (simulator.task(failing) or {})["failure_reason"]
    assert _poll_until_finished(client, working)["status"] == "COMPLETED"
    assert simulator.state()["tasks_by_status"] == {
        "CREATED": 0,
        "IN_PROGRESS": 0,
        "COMPLETED": 1,
        "FAILED": 1,
    }


def test_duplicated_webhooks_arrive_twice_with_the_same_id(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given every webhook is sent twice
    simulator.set_faults(duplicate_webhooks=True)

    # When a task runs
    _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())

    # Then each status arrives twice, both copies identical and valid
    deliveries = receiver.wait_for(lambda got: _statuses(got).count("COMPLETED") == 2)
    assert _statuses(deliveries) == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED", "COMPLETED"]
    for first, second in (deliveries[0:2], deliveries[2:4]):
        assert first.body == second.body
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        Webhook(STANDARD_SECRET).verify(second.body, second.headers)


def test_failed_deliveries_are_not_retried_by_default(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given a receiver that answers 500 to everything
    receiver.answers = [500] * 10

    # When a task runs
    task_id = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    simulator.wait_for_status(task_id)

    # Then each status was posted once
    deliveries = receiver.wait_for(_finished)
    assert _statuses(deliveries) == ["IN_PROGRESS", "COMPLETED"]
    _eventually(
        lambda: [simulator.state()["counters"][name] for name in ("webhooks_sent", "webhooks_failed")],
        [2, 2],
    )


def test_webhook_retries_keep_the_id_and_resign(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer, receiver: _WebhookReceiver
) -> None:
    # Given retries are on and the receiver fails the first attempt
    simulator.set_faults(webhook_retries=2)
    receiver.answers = [503]

    # When a task runs
    _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())

    # Then IN_PROGRESS is posted again with the same id, and every attempt verifies
    deliveries = receiver.wait_for(_finished)
    assert _statuses(deliveries) == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    assert deliveries[0].headers["webhook-id"] == deliveries[1].headers["webhook-id"]
    for delivery in deliveries:
        Webhook(STANDARD_SECRET).verify(delivery.body, delivery.headers)
    _eventually(
        lambda: [(record["attempt"], record["response_status"]) for record in simulator.state()["webhooks"]],
        [(1, 503), (2, 204), (1, 204)],
    )


def test_faults_are_validated_and_reset_clears_everything(
    simulator: MagnificSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a task and pending faults
    simulator.wait_for_status(_create(client, image_url=images.url("square.webp"), duration=3))
    simulator.set_faults(fail_tasks=2, webhook_delay=0.5)

    # When bad faults are posted, then a reset
    unknown = httpx.post(f"{simulator.url}/_sim/faults", json={"explode": True})
    bad_status = httpx.post(f"{simulator.url}/_sim/faults", json={"submit_errors": [418]})
    reset = httpx.post(f"{simulator.url}/_sim/reset")

    # Then the bad faults are refused by name, and the reset forgets tasks, counters and faults
    assert unknown.status_code == 400 and "explode" in unknown.json()["message"]
    assert bad_status.status_code == 400 and "submit_errors" in bad_status.json()["message"]
    assert reset.status_code == 200
    state = reset.json()
    assert state["tasks"] == [] and state["create_requests"] == [] and state["webhooks"] == []
    assert set(state["counters"].values()) == {0}
    assert state["faults"] == httpx.get(f"{simulator.url}/_sim/faults").json()["faults"]
    assert state["faults"]["fail_tasks"] == 0
    assert client.get(CREATE_PATH).json() == {"data": []}


# -- secrets stay out of logs and state ----------------------------------------------------


def test_logs_and_state_never_hold_the_api_key_secret_signatures_or_tokens(
    simulator: MagnificSimulator,
    client: httpx.Client,
    images: _ImageServer,
    receiver: _WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given logging at INFO for the simulator
    caplog.set_level(logging.INFO, logger="local.simulators.magnific")

    # When a task with a tokenised webhook URL and a presigned-looking image URL runs
    task_id = _create(client, image_url=images.url("square.webp"), duration=3, webhook_url=receiver.url())
    deliveries = receiver.wait_for(_finished)

    # Then there is a line per request and per webhook, and none carries a secret
    _eventually(lambda: caplog.text.count(f"webhook task={task_id}"), 2)
    text = caplog.text
    assert f"POST {CREATE_PATH} -> 200" in text
    signatures = [delivery.headers["webhook-signature"].split(",", 1)[1] for delivery in deliveries]
    for secret in [API_KEY, STANDARD_SECRET, "tok-any", "X-Amz-Signature", *signatures]:
        assert secret not in text
    assert API_KEY not in json.dumps(simulator.state())


# -- pure functions ------------------------------------------------------------------------


def test_validate_create_body_applies_the_defaults() -> None:
    # Given / When
    request, problems = validate_create_body({"image_url": "https://example.com/a.jpg", "seed": 7})

    # Then
    assert problems == []
    assert request is not None
    assert (request.resolution, request.duration, request.seed, request.prompt) == ("1080P", 5, 7, "")


def test_check_image_names_the_format() -> None:
    # Given / When / Then
    assert check_image(_picture(300, 750, "BMP")) == ("BMP", 300, 750)
    with pytest.raises(TaskFailed, match="larger than 10 MB"):
        check_image(b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024))


def test_faults_update_keeps_the_other_faults() -> None:
    # Given / When
    faults = Faults(drop_webhooks=1).updated({"submit_errors": [500], "retry_after": None})

    # Then
    assert faults == Faults(submit_errors=[500], drop_webhooks=1)
    with pytest.raises(ValueError, match="webhook_delay"):
        faults.updated({"webhook_delay": -1})


def test_webhook_signer_decodes_whsec_secrets_and_uses_other_secrets_as_raw_bytes() -> None:
    # Given the same message signed with each kind of secret
    now = time.time()
    timestamp = str(int(now))
    headers_for: dict[str, dict[str, str]] = {}
    for secret in (STANDARD_SECRET, RAW_SECRET):
        signature = webhook_signer(secret).sign("msg_1", datetime.fromtimestamp(int(now), UTC), "{}")
        headers_for[secret] = {
            "webhook-id": "msg_1",
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }

    # When / Then each verifies with its own key encoding
    Webhook(STANDARD_SECRET).verify("{}", headers_for[STANDARD_SECRET])
    Webhook(RAW_SECRET.encode()).verify("{}", headers_for[RAW_SECRET])
    with pytest.raises(ValueError, match="empty"):
        webhook_signer("")


# -- the command line ----------------------------------------------------------------------


def test_the_command_line_serves_until_interrupted() -> None:
    # Given the simulator started as its documented command, on any free port
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.simulators.magnific",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--webhook-secret",
            STANDARD_SECRET,
            "--render-max-long-side",
            "128",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line

        # When it is called, then interrupted
        listed = httpx.get(f"{match.group(1)}{CREATE_PATH}", headers={"x-magnific-api-key": API_KEY})
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)

        # Then it answered, stopped cleanly, and logged neither key nor secret
        assert listed.json() == {"data": []}
        assert process.returncode == 0, stderr
        assert f"GET {CREATE_PATH} -> 200" in stderr
        assert API_KEY not in stderr and STANDARD_SECRET not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
