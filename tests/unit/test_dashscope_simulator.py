"""The Model Studio (DashScope) and APIYI simulators, over real loopback HTTP: an image server
and the simulator, each a real server on 127.0.0.1 with an ephemeral port. The official
`dashscope` library drives it unchanged, so the simulator cannot drift from the library's
idea of the wire format."""

from __future__ import annotations

import base64
import io
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest

from local.simulators.apiyi import ApiyiSimulator
from local.simulators.dashscope import DashScopeSimulator, validate_create_body
from tests.unit.test_magnific_simulator import _ImageServer, _picture

API_KEY = "sk-sim-test-key"
CREATE = "/services/aigc/video-generation/video-synthesis"
WAIT_SECONDS = 30.0
MAX_LONG_SIDE = 256
TIME_FORMAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


@pytest.fixture(scope="module")
def images() -> Iterator[_ImageServer]:
    server = _ImageServer(
        {
            "landscape.jpg": _picture(800, 450, "JPEG"),
            "small.png": _picture(200, 200, "PNG"),
            "animated.gif": _picture(400, 400, "GIF"),
        }
    )
    yield server
    server.close()


def _simulator(cls: type[DashScopeSimulator] = DashScopeSimulator, **options: Any) -> DashScopeSimulator:
    options.setdefault("poll_rate_per_second", None)
    return cls(api_key=API_KEY, render_max_long_side=MAX_LONG_SIDE, progress_delay=0.0, **options)


@pytest.fixture
def simulator() -> Iterator[DashScopeSimulator]:
    with _simulator() as running:
        yield running


@pytest.fixture
def client(simulator: DashScopeSimulator) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {API_KEY}", "x-dashscope-async": "enable"}
    with httpx.Client(base_url=simulator.base_url, headers=headers) as http:
        yield http


def _body(image_url: str, **parameters: Any) -> dict[str, Any]:
    return {
        "model": "happyhorse-1.0-i2v",
        "input": {"prompt": "a horse runs", "media": [{"type": "first_frame", "url": image_url}]},
        "parameters": parameters,
    }


def _create(client: httpx.Client, image_url: str, **parameters: Any) -> str:
    response = client.post(CREATE, json=_body(image_url, **parameters))
    assert response.status_code == 200, response.text
    task_id: str = response.json()["output"]["task_id"]
    return task_id


def _poll(client: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        answer = client.get(f"/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        payload: dict[str, Any] = answer.json()
        if payload["output"]["task_status"] in ("SUCCEEDED", "FAILED", "UNKNOWN"):
            return payload
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish in {WAIT_SECONDS} s")


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code and body["message"]
    uuid.UUID(body["request_id"])


# -- the happy path ------------------------------------------------------------------------


def test_a_task_is_created_polled_to_succeeded_and_its_video_is_a_real_mp4(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # When a task is created asynchronously
    created = client.post(
        CREATE,
        json=_body(images.url("landscape.jpg"), resolution="720P", duration=3, seed=7, watermark=False),
    )

    # Then the answer is the documented create response
    assert created.status_code == 200, created.text
    payload = created.json()
    task_id = payload["output"]["task_id"]
    assert payload == {
        "request_id": payload["request_id"],
        "output": {"task_id": task_id, "task_status": "PENDING"},
    }

    # And polling reaches SUCCEEDED with the documented fields and usage
    finished = _poll(client, task_id)
    output = finished["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert output["video_url"] == f"{simulator.url}/videos/{task_id}.mp4"
    assert set(output) == {"task_id", "task_status", "submit_time", "scheduled_time", "end_time", "video_url"}
    assert all(TIME_FORMAT.match(output[key]) for key in ("submit_time", "scheduled_time", "end_time"))
    assert output["submit_time"] <= output["scheduled_time"] <= output["end_time"]
    assert finished["usage"] == {"duration": 3, "output_video_duration": 3, "video_count": 1, "SR": 720}

    # And the video is an H.264 MP4 of the requested duration in the image's aspect
    video = httpx.get(output["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), mode="r") as container:
        stream = container.streams.video[0]
        frame_count = sum(1 for _ in container.decode(stream))
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (256, 144)
        assert frame_count == 3 * 24

    # And the simulator recorded the call under the body's model, with the options, and sent no webhook
    state = simulator.state()
    assert state["create_requests"][0]["model"] == "happyhorse-1.0-i2v"
    assert state["tasks"][0]["request"]["watermark"] is False
    assert state["tasks"][0]["request"]["seed"] == 7
    assert state["tasks_by_status"]["SUCCEEDED"] == 1
    assert state["webhooks"] == [] and state["counters"]["webhooks_sent"] == 0


def test_defaults_apply_and_a_data_url_image_is_accepted(
    simulator: DashScopeSimulator, client: httpx.Client
) -> None:
    image = base64.b64encode(_picture(400, 400, "PNG")).decode()
    body = _body(f"data:image/png;base64,{image}")
    del body["parameters"]
    body["model"] = "happyhorse-1.1-i2v"
    response = client.post(CREATE, json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["output"]["task_id"]

    assert _poll(client, task_id)["output"]["task_status"] == "SUCCEEDED"
    request = simulator.task(task_id)
    assert request is not None
    assert request["model"] == "happyhorse-1.1-i2v"
    assert {k: request["request"][k] for k in ("resolution", "duration", "seed", "watermark")} == {
        "resolution": "1080P",
        "duration": 5,
        "seed": None,
        "watermark": True,
    }


def test_a_data_url_larger_than_the_default_body_limit_is_taken(client: httpx.Client) -> None:
    # Given a PNG whose base64 data: URL passes the core's 1 MB default body limit
    image = _picture(800, 450, "PNG") + bytes(900 * 1024)  # trailing bytes: still a PNG
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert len(url) > 1024 * 1024
    body = _body(url, duration=3)

    # When / Then
    response = client.post(CREATE, json=body)
    assert response.status_code == 200, response.text
    assert _poll(client, response.json()["output"]["task_id"])["output"]["task_status"] == "SUCCEEDED"


# -- refusals ------------------------------------------------------------------------------


def test_a_create_call_without_the_async_header_is_refused(
    client: httpx.Client, images: _ImageServer
) -> None:
    for value in (None, "disable"):
        headers = {"x-dashscope-async": value} if value else {}
        with httpx.Client(
            base_url=str(client.base_url), headers={"authorization": f"Bearer {API_KEY}"}
        ) as bare:
            response = bare.post(CREATE, json=_body(images.url("landscape.jpg")), headers=headers)
        _assert_error(response, 403, "AccessDenied")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", API_KEY])
def test_a_missing_or_wrong_key_is_refused_on_create_and_query(
    simulator: DashScopeSimulator, images: _ImageServer, authorization: str | None
) -> None:
    headers = {"x-dashscope-async": "enable"} | ({"authorization": authorization} if authorization else {})
    with httpx.Client(base_url=simulator.base_url, headers=headers) as http:
        _assert_error(http.post(CREATE, json=_body(images.url("landscape.jpg"))), 401, "InvalidApiKey")
        _assert_error(http.get(f"/tasks/{uuid.uuid4()}"), 401, "InvalidApiKey")
    assert simulator.state()["counters"]["create_requests"] == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.pop("model"), "model"),
        (lambda b: b.update(model="wan2.2-i2v-plus"), "Model not exist"),
        (lambda b: b.pop("input"), "input"),
        (lambda b: b["input"].pop("media"), "input.media"),
        (lambda b: b["input"].update(media=[{"type": "last_frame", "url": "http://x/y.png"}]), "first_frame"),
        (lambda b: b["input"].update(img_url="http://x/y.png", media=[]), "input.media"),
        (lambda b: b["input"]["media"][0].update(url="ftp://x/y.png"), "url"),
        (lambda b: b["input"].update(prompt=5), "prompt"),
        (lambda b: b.update(parameters={"resolution": "480P"}), "resolution"),
        (lambda b: b.update(parameters={"duration": 2}), "duration"),
        (lambda b: b.update(parameters={"duration": 16}), "duration"),
        (lambda b: b.update(parameters={"seed": -1}), "seed"),
        (lambda b: b.update(parameters={"watermark": "no"}), "watermark"),
        (lambda b: b.update(parameters=[]), "parameters"),
    ],
)
def test_an_invalid_body_is_refused_with_invalid_parameter(
    simulator: DashScopeSimulator, client: httpx.Client, change: Any, reason: str
) -> None:
    body = _body("http://127.0.0.1:1/image.png")
    change(body)
    response = client.post(CREATE, json=body)
    _assert_error(response, 400, "InvalidParameter")
    assert reason in response.json()["message"]
    assert simulator.state()["counters"]["tasks_created"] == 0


def test_a_body_that_is_not_json_is_refused(client: httpx.Client) -> None:
    _assert_error(client.post(CREATE, content=b"{not json"), 400, "InvalidParameter")


def test_other_methods_and_paths_answer_the_error_body(client: httpx.Client) -> None:
    _assert_error(client.get(CREATE), 405, "MethodNotAllowed")
    _assert_error(client.delete(f"/tasks/{uuid.uuid4()}"), 405, "MethodNotAllowed")
    _assert_error(client.get("/services/other"), 404, "NotFound")


def test_a_long_prompt_is_truncated_not_refused(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    body = _body(images.url("landscape.jpg"))
    body["input"]["prompt"] = "x" * 6000
    task_id = client.post(CREATE, json=body).json()["output"]["task_id"]
    task = simulator.task(task_id)
    assert task is not None and len(task["request"]["prompt"]) == 5000


# -- unknown and expired tasks ---------------------------------------------------------------


def test_an_unknown_task_id_answers_unknown_with_200(client: httpx.Client) -> None:
    task_id = str(uuid.uuid4())
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}


def test_an_expired_task_id_answers_unknown(images: _ImageServer) -> None:
    with _simulator(task_ttl_seconds=0.3) as simulator, _client(simulator) as client:
        task_id = _create(client, images.url("landscape.jpg"), duration=3)
        simulator.wait_for_status(task_id)
        time.sleep(0.4)
        assert client.get(f"/tasks/{task_id}").json()["output"]["task_status"] == "UNKNOWN"


def _client(simulator: DashScopeSimulator) -> httpx.Client:
    headers = {"authorization": f"Bearer {API_KEY}", "x-dashscope-async": "enable"}
    return httpx.Client(base_url=simulator.base_url, headers=headers)


# -- failed tasks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "code"),
    [("animated.gif", "InvalidParameter"), ("missing.png", "InvalidURL")],
)
def test_an_image_the_route_cannot_take_fails_the_task_with_a_code(
    client: httpx.Client, images: _ImageServer, image: str, code: str
) -> None:
    output = _poll(client, _create(client, images.url(image)))["output"]
    assert output["task_status"] == "FAILED"
    assert output["code"] == code and output["message"]
    assert "video_url" not in output


def test_no_side_or_aspect_rule_is_applied(client: httpx.Client, images: _ImageServer) -> None:
    # Only format and size are published for this route (Magnific's 300 px rule is its own).
    assert _poll(client, _create(client, images.url("small.png"), duration=3))["output"]["task_status"] == (
        "SUCCEEDED"
    )


def test_bmp_and_image_size_are_options(images: _ImageServer) -> None:
    with _simulator(accept_bmp=False, image_max_bytes=1024) as simulator, _client(simulator) as client:
        output = _poll(client, _create(client, images.url("landscape.jpg")))["output"]
        assert output["task_status"] == "FAILED" and "larger than" in output["message"]
    with pytest.raises(ValueError, match="image_max_bytes"):
        DashScopeSimulator(api_key=API_KEY, image_max_bytes=30 * 1024 * 1024)


# -- fault injection -------------------------------------------------------------------------


def test_submit_errors_answer_in_order_with_retry_after_then_success(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(submit_errors=[429, 503, 400], retry_after=2)

    throttled = client.post(CREATE, json=_body(images.url("landscape.jpg")))
    _assert_error(throttled, 429, "Throttling.RateQuota")
    assert throttled.headers["retry-after"] == "2"
    unavailable = client.post(CREATE, json=_body(images.url("landscape.jpg")))
    _assert_error(unavailable, 503, "ServiceUnavailable")
    assert "retry-after" not in unavailable.headers
    _assert_error(client.post(CREATE, json=_body(images.url("landscape.jpg"))), 400, "Arrearage")

    _create(client, images.url("landscape.jpg"))
    counters = simulator.state()["counters"]
    assert (counters["create_requests"], counters["tasks_created"]) == (4, 1)
    with pytest.raises(ValueError, match="submit_errors"):
        simulator.set_faults(submit_errors=[418])


def test_failed_tasks_are_injected_for_the_next_tasks_only(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(fail_tasks=1)
    failed = _poll(client, _create(client, images.url("landscape.jpg"), duration=3))["output"]
    assert (failed["task_status"], failed["code"]) == ("FAILED", "InternalError")
    assert "fault injection" in failed["message"]
    assert "end_time" in failed and "usage" not in failed
    second = _poll(client, _create(client, images.url("landscape.jpg"), duration=3))
    assert second["output"]["task_status"] == "SUCCEEDED"
    assert simulator.faults()["fail_tasks"] == 0


def test_the_control_api_is_served(simulator: DashScopeSimulator) -> None:
    with httpx.Client(base_url=simulator.url) as control:
        assert control.post("/_sim/faults", json={"submit_errors": [503]}).json()["faults"][
            "submit_errors"
        ] == [503]
        state = control.post("/_sim/reset").json()
        assert state["faults"]["submit_errors"] == []
        assert set(state["tasks_by_status"]) == {"PENDING", "RUNNING", "SUCCEEDED", "FAILED"}


def test_status_errors_answer_the_next_task_queries_with_the_route_error_body(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a task, then a 429 with Retry-After and a 503 for the next queries
    task_id = _create(client, images.url("landscape.jpg"), duration=3)
    simulator.set_faults(status_errors=[429, 503], retry_after=3)

    # When / Then
    throttled = client.get(f"/tasks/{task_id}")
    _assert_error(throttled, 429, "Throttling.RateQuota")
    assert throttled.headers["retry-after"] == "3"
    unavailable = client.get(f"/tasks/{task_id}")
    _assert_error(unavailable, 503, "ServiceUnavailable")
    assert "retry-after" not in unavailable.headers
    assert client.get(f"/tasks/{task_id}").json()["output"]["task_id"] == task_id


def test_a_forgotten_task_answers_unknown_with_200(
    simulator: DashScopeSimulator, client: httpx.Client, images: _ImageServer
) -> None:
    # Given a succeeded task
    task_id = _create(client, images.url("landscape.jpg"), duration=3)
    simulator.wait_for_status(task_id)

    # When it is forgotten through the control API
    forgotten = httpx.post(f"{simulator.url}/_sim/forget/{task_id}")

    # Then it answers as an unknown id does: HTTP 200, UNKNOWN, no video
    assert forgotten.status_code == 200
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    assert httpx.get(f"{simulator.url}/videos/{task_id}.mp4").status_code == 404


def test_task_queries_over_the_rate_answer_429(images: _ImageServer) -> None:
    with _simulator(poll_rate_per_second=3) as simulator, _client(simulator) as client:
        answers = [client.get(f"/tasks/{uuid.uuid4()}") for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        _assert_error(answers[3], 429, "Throttling.RateQuota")
        time.sleep(1.05)
        assert client.get(f"/tasks/{uuid.uuid4()}").status_code == 200


# -- APIYI: the same class under another prefix ------------------------------------------------


def test_apiyi_serves_the_same_protocol_under_its_prefix(images: _ImageServer) -> None:
    with _simulator(ApiyiSimulator) as simulator, _client(simulator) as client:
        assert simulator.base_url == f"{simulator.url}/wan/api/v1"
        task_id = _create(client, images.url("landscape.jpg"), duration=2)  # APIYI's 2..15 s
        assert _poll(client, task_id)["output"]["task_status"] == "SUCCEEDED"
        headers = dict(client.headers)
        _assert_error(
            httpx.post(f"{simulator.url}/api/v1{CREATE}", headers=headers, json={}), 404, "NotFound"
        )
        assert simulator.logger.name == "local.simulators.apiyi"


def test_the_task_path_prefix_is_an_option(images: _ImageServer) -> None:
    with _simulator(ApiyiSimulator, task_path_prefix="/api/v1") as simulator, _client(simulator) as client:
        task_id = _create(client, images.url("landscape.jpg"), duration=2)
        simulator.wait_for_status(task_id)
        headers = dict(client.headers)
        assert httpx.get(f"{simulator.url}/api/v1/tasks/{task_id}", headers=headers).json()["output"][
            "task_status"
        ] == ("SUCCEEDED")
        assert client.get(f"/tasks/{task_id}").status_code == 404


def test_validate_create_body_applies_the_route_durations() -> None:
    body = _body("http://127.0.0.1/a.png", duration=2)
    assert isinstance(validate_create_body(body), str)
    parsed = validate_create_body(body, duration_min=2)
    assert not isinstance(parsed, str) and parsed[1].duration == 2


# -- the official dashscope library, unchanged -------------------------------------------------


def test_the_dashscope_library_drives_the_simulator(
    simulator: DashScopeSimulator, images: _ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashscope = pytest.importorskip("dashscope")
    from dashscope import VideoSynthesis

    # Given the library pointed at the simulator through its documented base-URL setting
    monkeypatch.setattr(dashscope, "base_http_api_url", simulator.base_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    # When it creates a task asynchronously with HappyHorse's media list, then waits
    created = VideoSynthesis.async_call(
        model="happyhorse-1.0-i2v",
        api_key=API_KEY,
        prompt="a horse runs",
        media=[{"type": "first_frame", "url": images.url("landscape.jpg")}],
        resolution="720P",
        duration=3,
        watermark=False,
    )
    assert created.status_code == 200, created
    assert created.output.task_status == "PENDING"
    finished = VideoSynthesis.wait(created, api_key=API_KEY)
    fetched = VideoSynthesis.fetch(created, api_key=API_KEY)

    # Then it sees SUCCEEDED with the video URL, and the simulator saw the library's body
    assert finished.status_code == 200, finished
    assert finished.output.task_status == "SUCCEEDED"
    assert finished.output.video_url == f"{simulator.url}/videos/{created.output.task_id}.mp4"
    assert fetched.output.task_status == "SUCCEEDED"
    request = simulator.state()["tasks"][0]["request"]
    assert (request["resolution"], request["duration"], request["watermark"]) == ("720P", 3, False)
    assert httpx.get(finished.output.video_url).status_code == 200

    # And the library reads the error body and the UNKNOWN answer as the real service's
    wrong = VideoSynthesis.async_call(
        model="happyhorse-1.0-i2v",
        api_key="wrong",
        media=[{"type": "first_frame", "url": images.url("landscape.jpg")}],
    )
    assert (wrong.status_code, wrong.code) == (401, "InvalidApiKey")
    unknown = VideoSynthesis.fetch(str(uuid.uuid4()), api_key=API_KEY)
    assert unknown.output.task_status == "UNKNOWN"


# -- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(("module", "prefix"), [("dashscope", "/api/v1"), ("apiyi", "/wan/api/v1")])
def test_the_command_line_serves_until_interrupted(module: str, prefix: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", f"local.simulators.{module}", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        task_id = str(uuid.uuid4())
        answer = httpx.get(
            f"{match.group(1)}{prefix}/tasks/{task_id}", headers={"authorization": f"Bearer {API_KEY}"}
        )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)

        assert answer.json()["output"]["task_status"] == "UNKNOWN"
        assert process.returncode == 0, stderr
        assert f"GET {prefix}/tasks/{task_id} -> 200" in stderr
        assert API_KEY not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
