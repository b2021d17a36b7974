"""The AI/ML API simulator's wire format, over real loopback HTTP: an image server and the
simulator, each a real server on 127.0.0.1 with an ephemeral port, driven with plain httpx
the way AI/ML API's documented examples call the real service."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import av
import httpx
import pytest

from i2v.providers.aimlapi import AimlapiSettings
from local.simulators.aimlapi import AimlapiSimulator, validate_create_body
from tests.unit.test_magnific_simulator import _ImageServer, _picture

API_KEY = "aiml-sim-test-key"
PATH = "/v2/video/generations"
WAIT_SECONDS = 30.0
MAX_LONG_SIDE = 256
ERROR_KEYS = {"message", "path", "requestId", "statusCode", "timestamp"}


@pytest.fixture(scope="module")
def images() -> Iterator[_ImageServer]:
    server = _ImageServer(
        {
            "landscape.jpg": _picture(800, 450, "JPEG"),
            "small.png": _picture(200, 200, "PNG"),
            "wide.png": _picture(1000, 300, "PNG"),
            "animated.gif": _picture(400, 400, "GIF"),
        }
    )
    yield server
    server.close()


def _simulator(**options: Any) -> AimlapiSimulator:
    options.setdefault("progress_delay", 0.0)
    return AimlapiSimulator(api_key=API_KEY, render_max_long_side=MAX_LONG_SIDE, **options)


def _client(simulator: AimlapiSimulator, key: str | None = API_KEY) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=simulator.url, headers=headers)


@pytest.fixture
def simulator() -> Iterator[AimlapiSimulator]:
    with _simulator() as running:
        yield running


@pytest.fixture
def client(simulator: AimlapiSimulator) -> Iterator[httpx.Client]:
    with _client(simulator) as http:
        yield http


def _body(image_url: str, **fields: Any) -> dict[str, Any]:
    return {"model": "alibaba/happyhorse-1-0", "prompt": "a horse runs", "image_url": image_url, **fields}


def _create(client: httpx.Client, image_url: str, **fields: Any) -> str:
    response = client.post(PATH, json=_body(image_url, **fields))
    assert response.status_code == 200, response.text
    generation_id: str = response.json()["id"]
    return generation_id


def _read(client: httpx.Client, generation_id: str) -> httpx.Response:
    return client.get(PATH, params={"generation_id": generation_id})


def _poll(client: httpx.Client, generation_id: str) -> tuple[dict[str, Any], list[str]]:
    """The final generation and every distinct status seen on the way, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        answer = _read(client, generation_id)
        assert answer.status_code == 200, answer.text
        payload: dict[str, Any] = answer.json()
        if not seen or seen[-1] != payload["status"]:
            seen.append(payload["status"])
        if payload["status"] in ("completed", "error"):
            return payload, seen
        time.sleep(0.02)
    raise AssertionError(f"generation {generation_id} did not finish in {WAIT_SECONDS} s")


def _assert_error(response: httpx.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["statusCode"] == status and body["path"] == PATH
    assert message in body["message"]
    uuid.UUID(body["requestId"])
    datetime.fromisoformat(body["timestamp"])
    return body


# -- the happy path ------------------------------------------------------------------------


def test_a_generation_goes_queued_generating_completed_and_its_video_is_a_real_mp4(
    images: _ImageServer,
) -> None:
    with _simulator(progress_delay=0.3) as simulator, _client(simulator) as client:
        # When a generation is created with the documented fields
        created = client.post(
            PATH, json=_body(images.url("landscape.jpg"), resolution="720p", duration=3, seed=7)
        )

        # Then the answer is exactly the documented create response
        assert created.status_code == 200, created.text
        generation_id = created.json()["id"]
        assert created.json() == {"id": generation_id, "status": "queued"}

        # And reading it by generation_id shows the documented statuses in order
        finished, seen = _poll(client, generation_id)
        assert seen == ["queued", "generating", "completed"]
        assert finished == {
            "id": generation_id,
            "status": "completed",
            "video": {"url": f"{simulator.url}/videos/{generation_id}.mp4"},
            "error": None,
        }

        # And the video is an H.264 MP4 of the requested duration in the image's aspect
        video = httpx.get(finished["video"]["url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(video.content), mode="r") as container:
            stream = container.streams.video[0]
            frame_count = sum(1 for _ in container.decode(stream))
            assert stream.codec_context.name == "h264"
            assert (stream.width, stream.height) == (256, 144)
            assert frame_count == 3 * 24

        # And the simulator recorded the call under the body's model, and sent no webhook
        state = simulator.state()
        assert state["create_requests"][0]["model"] == "alibaba/happyhorse-1-0"
        assert state["tasks"][0]["request"]["seed"] == 7
        assert state["tasks_by_status"] == {"queued": 0, "generating": 0, "completed": 1, "error": 0}
        assert state["webhooks"] == []


def test_defaults_apply_and_a_duration_string_is_taken(
    simulator: AimlapiSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # The docs' own examples send "duration": "7"
    defaulted = simulator.task(_create(client, images.url("landscape.jpg")))
    as_string = simulator.task(_create(client, images.url("landscape.jpg"), duration="7"))
    assert defaulted is not None and as_string is not None
    assert {k: defaulted["request"][k] for k in ("resolution", "duration", "seed", "watermark")} == {
        "resolution": "1080P",
        "duration": 10,
        "seed": None,
        "watermark": False,
    }
    assert as_string["request"]["duration"] == 7


def test_happyhorse_1_1_is_a_model_and_the_models_are_an_option(images: _ImageServer) -> None:
    with _simulator(models=("alibaba/happyhorse-1-0",)) as simulator, _client(simulator) as client:
        refused = client.post(PATH, json=_body(images.url("landscape.jpg"), model="alibaba/happyhorse-1.1"))
        _assert_error(refused, 400, "model: Invalid enum value")
    parsed = validate_create_body(_body("http://127.0.0.1/a.png", model="alibaba/happyhorse-1.1"))
    assert not isinstance(parsed, str) and parsed[0] == "alibaba/happyhorse-1.1"


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", API_KEY])
def test_a_missing_or_wrong_key_is_refused_on_create_and_read(
    simulator: AimlapiSimulator, images: _ImageServer, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    with httpx.Client(base_url=simulator.url, headers=headers) as http:
        _assert_error(http.post(PATH, json=_body(images.url("landscape.jpg"))), 401, "valid API key")
        _assert_error(_read(http, str(uuid.uuid4())), 401, "valid API key")
    assert simulator.state()["counters"]["create_requests"] == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.pop("model"), "model: Invalid enum value"),
        (lambda b: b.update(model="alibaba/wan2.5-i2v-preview"), "model: Invalid enum value"),
        (lambda b: b.pop("prompt"), "prompt: Required"),
        (lambda b: b.update(prompt=5), "prompt: Expected string"),
        (lambda b: b.pop("image_url"), "image_url: Required"),
        (lambda b: b.update(image_url="ftp://x/y.png"), "image_url: Invalid url"),
        (lambda b: b.update(image_url="data:image/png;base64"), "image_url: Invalid url"),
        (lambda b: b.update(video_url="https://x/y.mp4"), "video_url: not simulated"),
        (lambda b: b.update(reference_image_urls=["https://x/y.png"]), "reference_image_urls"),
        (lambda b: b.update(resolution="720P"), "resolution: Invalid enum value"),
        (lambda b: b.update(resolution="480p"), "resolution: Invalid enum value"),
        (lambda b: b.update(duration=2), "duration: Invalid enum value"),
        (lambda b: b.update(duration=16), "duration: Invalid enum value"),
        (lambda b: b.update(duration="seven"), "duration: Invalid enum value"),
        (lambda b: b.update(duration=5.5), "duration: Invalid enum value"),
        (lambda b: b.update(seed=-1), "seed: Expected integer"),
        (lambda b: b.update(seed=True), "seed: Expected integer"),
        (lambda b: b.update(watermark="no"), "watermark: Expected boolean"),
        (lambda b: b.update(aspect_ratio="2:1"), "aspect_ratio: Invalid enum value"),
        (lambda b: b.update(audio_setting="loud"), "audio_setting: Invalid enum value"),
    ],
)
def test_an_invalid_body_is_refused_with_body_validation_error(
    simulator: AimlapiSimulator, client: httpx.Client, change: Any, reason: str
) -> None:
    body = _body("http://127.0.0.1:1/image.png")
    change(body)
    response = client.post(PATH, json=body)
    error = _assert_error(response, 400, "Body validation error!")
    assert reason in error["message"]
    assert simulator.state()["counters"]["tasks_created"] == 0


def test_a_base64_data_url_image_is_taken_as_the_docs_allow(
    simulator: AimlapiSimulator, client: httpx.Client
) -> None:
    # Given an image as a data: URL larger than a 1 MB body (the core's default limit)
    image = _picture(800, 450, "PNG") + bytes(900 * 1024)  # trailing bytes: still a PNG
    url = "data:image/png;base64," + base64.b64encode(image).decode()

    # When / Then
    finished, _ = _poll(client, _create(client, url, duration=3))
    assert finished["status"] == "completed", finished
    assert simulator.state()["tasks"][0]["request"]["image_url"] == url


def test_a_body_that_is_not_a_json_object_is_refused(client: httpx.Client) -> None:
    _assert_error(client.post(PATH, content=b"{not json"), 400, "Body validation error!")
    _assert_error(client.post(PATH, json=[1, 2]), 400, "Expected object")


def test_a_read_needs_one_generation_id(client: httpx.Client) -> None:
    _assert_error(client.get(PATH), 400, "generation_id: Required")
    _assert_error(client.get(PATH, params={"generation_id": ""}), 400, "generation_id: Required")


def test_other_methods_and_paths_answer_the_error_body(client: httpx.Client) -> None:
    _assert_error(client.delete(PATH), 405, "Method Not Allowed")
    _assert_error(client.get("/v2/generate/video/minimax/generation"), 404, "Not Found")
    with pytest.raises(ValueError, match="API key"):
        AimlapiSimulator(api_key="")


# -- unknown and expired generations ------------------------------------------------------------


def test_an_unknown_generation_id_answers_404(client: httpx.Client) -> None:
    _assert_error(_read(client, str(uuid.uuid4())), 404, "Generation not found")


def test_an_expired_generation_answers_404(images: _ImageServer) -> None:
    with _simulator(generation_ttl_seconds=0.5) as simulator, _client(simulator) as client:
        generation_id = _create(client, images.url("landscape.jpg"), duration=3)
        assert _read(client, generation_id).status_code == 200
        simulator.wait_for_status(generation_id)
        time.sleep(0.6)
        _assert_error(_read(client, generation_id), 404, "Generation not found")


# -- failed generations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name", "words"),
    [
        ("small.png", "InvalidImage", "at least 300 px"),
        ("wide.png", "InvalidImage", "at most 2.5:1"),
        ("animated.gif", "InvalidImage", "image rejected"),
        ("missing.png", "ImageFetchError", "HTTP 404"),
    ],
)
def test_an_image_the_product_rules_refuse_ends_the_generation_in_error(
    client: httpx.Client, images: _ImageServer, image: str, name: str, words: str
) -> None:
    finished, _ = _poll(client, _create(client, images.url(image)))
    assert finished["status"] == "error" and finished["video"] is None
    assert finished["error"]["name"] == name
    assert words in finished["error"]["message"]


def test_the_image_rules_come_from_the_route_settings(images: _ImageServer) -> None:
    relaxed = AimlapiSettings(image_min_side_px=100)
    with _simulator(settings=relaxed) as simulator, _client(simulator) as client:
        finished, _ = _poll(client, _create(client, images.url("small.png"), duration=3))
        assert finished["status"] == "completed"
    with pytest.raises(ValueError, match="image_max_bytes"):
        AimlapiSimulator(api_key=API_KEY, settings=AimlapiSettings(image_max_bytes=30 * 1024 * 1024))


# -- fault injection ---------------------------------------------------------------------------


def test_submit_errors_answer_in_order_with_retry_after_then_success(
    simulator: AimlapiSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(submit_errors=[429, 503, 403, 504], retry_after=2)
    body = _body(images.url("landscape.jpg"))

    throttled = client.post(PATH, json=body)
    _assert_error(throttled, 429, "Too Many Requests")
    assert throttled.headers["retry-after"] == "2"
    unavailable = client.post(PATH, json=body)
    _assert_error(unavailable, 503, "Service unavailable")
    assert "retry-after" not in unavailable.headers
    _assert_error(client.post(PATH, json=body), 403, "run out of credits")
    _assert_error(client.post(PATH, json=body), 504, "Generation timeout")

    _create(client, images.url("landscape.jpg"))
    counters = simulator.state()["counters"]
    assert (counters["create_requests"], counters["tasks_created"]) == (5, 1)
    with pytest.raises(ValueError, match="submit_errors"):
        simulator.set_faults(submit_errors=[418])


def test_failed_generations_are_injected_for_the_next_ones_only(
    simulator: AimlapiSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(fail_tasks=1)
    failed, _ = _poll(client, _create(client, images.url("landscape.jpg"), duration=3))
    assert failed["status"] == "error"
    assert failed["error"] == {"name": "GenerationError", "message": "simulated failure (fault injection)"}
    second, _ = _poll(client, _create(client, images.url("landscape.jpg"), duration=3))
    assert second["status"] == "completed"
    assert simulator.faults()["fail_tasks"] == 0


def test_status_errors_answer_the_next_reads_with_the_route_error_body(
    simulator: AimlapiSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a generation, then a 429 with Retry-After and a 503 for the next reads
    generation_id = _create(client, images.url("landscape.jpg"), duration=3)
    simulator.set_faults(status_errors=[429, 503], retry_after=5)

    # When / Then
    throttled = _read(client, generation_id)
    _assert_error(throttled, 429, "Too Many Requests")
    assert throttled.headers["retry-after"] == "5"
    unavailable = _read(client, generation_id)
    _assert_error(unavailable, 503, "Service unavailable")
    assert "retry-after" not in unavailable.headers
    assert _read(client, generation_id).status_code == 200
    with pytest.raises(ValueError, match="status_errors"):
        simulator.set_faults(status_errors=[418])


def test_a_forgotten_generation_answers_404_like_an_unknown_one(
    simulator: AimlapiSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a completed generation
    generation_id = _create(client, images.url("landscape.jpg"), duration=3)
    simulator.wait_for_status(generation_id)

    # When it is forgotten through the control API
    forgotten = httpx.post(f"{simulator.url}/_sim/forget/{generation_id}")

    # Then it reads as an unknown id does
    assert forgotten.status_code == 200
    _assert_error(_read(client, generation_id), 404, "Generation not found")


def test_the_control_api_is_served(simulator: AimlapiSimulator) -> None:
    with httpx.Client(base_url=simulator.url) as control:
        faults = control.post("/_sim/faults", json={"submit_errors": [502]}).json()["faults"]
        assert faults["submit_errors"] == [502]
        state = control.post("/_sim/reset").json()
        assert state["faults"]["submit_errors"] == []
        assert set(state["tasks_by_status"]) == {"queued", "generating", "completed", "error"}


def test_reads_over_the_poll_rate_answer_429(images: _ImageServer) -> None:
    with _simulator(poll_rate_per_second=3) as simulator, _client(simulator) as client:
        answers = [_read(client, str(uuid.uuid4())) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [404, 404, 404, 429]
        _assert_error(answers[3], 429, "Too Many Requests")
        # Creating is not a read: it is not throttled
        _create(client, images.url("landscape.jpg"))
        time.sleep(1.05)
        assert _read(client, str(uuid.uuid4())).status_code == 404


# -- the command line ----------------------------------------------------------------------


def test_the_command_line_help_names_the_route_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "local.simulators.aimlapi", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--api-key", "--poll-rate", "--generation-ttl", "--port", "--progress-delay"):
        assert option in done.stdout
    assert "python -m local.simulators.aimlapi" in done.stdout


def test_the_command_line_refuses_to_start_without_a_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "local.simulators.aimlapi", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "AIMLAPI_SIM_API_KEY"},
    )
    assert done.returncode == 2 and "--api-key is required" in done.stderr


def test_the_command_line_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.simulators.aimlapi", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        generation_id = str(uuid.uuid4())
        answer = httpx.get(
            f"{match.group(1)}{PATH}",
            params={"generation_id": generation_id},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)

        assert answer.status_code == 404 and answer.json()["message"] == "Generation not found"
        assert process.returncode == 0, stderr
        assert f"GET {PATH} -> 404" in stderr
        assert API_KEY not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
