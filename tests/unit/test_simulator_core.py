"""The simulators' core under a toy route with its own status names, paths and error bodies:
what a route module gets from the core without writing it, over real loopback HTTP."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from local.simulators import core
from local.simulators.core import HttpRequest, Reply, SimTask, State, TaskFailed, json_reply

WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class _Request:
    image_url: str
    resolution: Literal["720P", "1080P"] = "720P"
    duration: int = 3
    webhook_url: str | None = None


class _Faults(core.Faults):
    ERROR_STATUSES: ClassVar[frozenset[int]] = frozenset({429, 503})


class _ToySimulator(core.Simulator[_Request]):
    """`POST /jobs[?hook=<url>]`, `GET /job?id=<id>`, lower-case statuses, and a webhook of
    each status change to the `hook` the create call named."""

    ROUTE = "toy"
    TITLE = "Toy"
    STATUS_NAMES: ClassVar[Mapping[State, str]] = {
        State.CREATED: "queued",
        State.IN_PROGRESS: "running",
        State.COMPLETED: "done",
        State.FAILED: "error",
    }
    IMAGE_MAX_BYTES = 1024 * 1024
    BODY_MAX_BYTES = core.data_url_body_max(IMAGE_MAX_BYTES)  # it takes data: URLs
    FAULTS = _Faults

    def route(self, request: HttpRequest) -> Reply | None:
        if request.path == "/jobs" and request.method == "POST":
            return self.submit(request, "toy-1")
        if request.path == "/job" and request.method == "GET":
            if (refused := self.refused_status_read()) is not None:
                return refused
            task = self.find_task(request.param("id") or "")
            return self.error_reply(404) if task is None else json_reply(200, self.task_body(task))
        return None

    def parse_request(self, body: object, request: HttpRequest) -> _Request | Reply:
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            return json_reply(422, {"error": "image is required"})
        return _Request(image_url=body["image"], webhook_url=request.param("hook"))

    def created_reply(self, task: SimTask[_Request]) -> Reply:
        return json_reply(201, self.task_body(task))

    def task_body(self, task: SimTask[_Request]) -> dict[str, Any]:
        return {"id": task.task_id, "state": self.status_name(task), "video": task.video_url}

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
        return json_reply(status, {"error": f"toy {status}"}, headers=headers)

    def check_image(self, data: bytes) -> None:
        if not data.startswith(b"\x89PNG"):
            raise TaskFailed("toy routes take PNG only")

    def webhook_body(self, task: SimTask[_Request]) -> Mapping[str, Any] | None:
        return self.task_body(task)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (320, 320), (10, 120, 200)).save(buffer, "PNG" if "png" in self.path else "BMP")
        body = buffer.getvalue()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Receiver:
    """Records the body of every webhook POST; answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook?token=secret-token"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def images() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    yield server
    server.close()


@pytest.fixture
def toy() -> Iterator[_ToySimulator]:
    with _ToySimulator(render_max_long_side=64, progress_delay=0.0) as simulator:
        yield simulator


def _create(toy: _ToySimulator, image: str, hook: str | None = None) -> str:
    params = {"hook": hook} if hook else None
    created = httpx.post(f"{toy.url}/jobs", params=params, json={"image": image})
    assert created.status_code == 201, created.text
    task_id: str = created.json()["id"]
    return task_id


def _read(toy: _ToySimulator, task_id: str) -> httpx.Response:
    return httpx.get(f"{toy.url}/job", params={"id": task_id})


def _wait_until(condition: Any, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- lifecycle -------------------------------------------------------------------------------


def test_a_route_gets_the_lifecycle_in_its_own_status_names(toy: _ToySimulator, images: str) -> None:
    # Given / When a task is created on the toy route
    created = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"})
    task_id = created.json()["id"]

    # Then the route's reply, its status names, and the core's video and state
    assert (created.status_code, created.json()["state"]) == (201, "queued")
    assert toy.wait_for_status(task_id)["state"] == "done"
    status = _read(toy, task_id).json()
    assert status == {"id": task_id, "state": "done", "video": f"{toy.url}/videos/{task_id}.mp4"}
    video = httpx.get(status["video"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    state = httpx.get(f"{toy.url}/_sim/state").json()
    assert state["tasks_by_status"] == {"queued": 0, "running": 0, "done": 1, "error": 0}
    assert state["counters"]["tasks_created"] == 1 and state["webhooks"] == []


def test_the_route_image_check_and_fail_tasks_fault_end_the_task_in_its_failed_status(
    toy: _ToySimulator, images: str
) -> None:
    # Given a BMP the route refuses, then a PNG with a forced failure
    refused = _create(toy, f"{images}/a.bmp")
    toy.set_faults(fail_tasks=1)
    forced = _create(toy, f"{images}/b.png")

    # When / Then
    assert toy.wait_for_status(refused) | {"request": None} == {
        "id": refused,
        "state": "error",
        "video": None,
        "model": "toy-1",
        "failure_reason": "toy routes take PNG only",
        "request": None,
    }
    assert "fault injection" in (toy.wait_for_status(forced)["failure_reason"] or "")


def test_each_state_is_stamped_with_the_time_it_was_reached(toy: _ToySimulator, images: str) -> None:
    # Given / When
    task_id = _create(toy, f"{images}/a.png")
    toy.wait_for_status(task_id)

    # Then
    task = toy.find_task(task_id)
    assert task is not None
    assert list(task.times) == [State.CREATED, State.IN_PROGRESS, State.COMPLETED]
    assert task.times[State.CREATED] == task.created_at
    assert task.times[State.CREATED] <= task.times[State.IN_PROGRESS] <= task.times[State.COMPLETED]


# -- what the route is handed ------------------------------------------------------------------


def test_the_route_gets_the_query_parsed_and_the_log_line_leaves_it_out(
    toy: _ToySimulator, images: str, receiver: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a create call whose webhook URL is in the query, percent-encoded, with a token
    caplog.set_level(logging.INFO, logger="local.simulators.toy")
    task_id = _create(toy, f"{images}/a.png", hook=receiver.url)

    # When it completes and is read by an id in the query
    toy.wait_for_status(task_id)
    read = _read(toy, task_id)

    # Then the route saw both parameters decoded, and no log line holds a query string
    assert read.status_code == 200 and read.json()["id"] == task_id
    assert toy.state()["tasks"][0]["request"]["webhook_url"] == receiver.url
    _wait_until(lambda: len(receiver.bodies) == 2)
    assert [body["state"] for body in receiver.bodies] == ["running", "done"]
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("GET /job -> 200") for line in lines)
    assert any(line.startswith("POST /jobs -> 201") for line in lines)
    assert not any("secret-token" in line or "id=" in line for line in lines)


def test_http_request_param_is_the_first_value_or_none() -> None:
    request = HttpRequest("GET", "/x", {"a": ["1", "2"], "b": [""]}, {}, b"")
    assert (request.param("a"), request.param("b"), request.param("c")) == ("1", "", None)


@pytest.mark.parametrize(
    "encode",
    [
        lambda png: "data:image/png;base64," + base64.b64encode(png).decode(),
        lambda png: "data:image/png," + quote(png),
        lambda png: "data:;base64," + base64.b64encode(png).decode(),
    ],
    ids=["base64", "percent-encoded", "no-media-type"],
)
def test_a_data_url_image_is_decoded_instead_of_fetched(toy: _ToySimulator, encode: Any) -> None:
    # Given / When
    task_id = _create(toy, encode(_png()))

    # Then
    assert toy.wait_for_status(task_id)["state"] == "done"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,%%%not-base64", "image data URL cannot be read: not valid base64"),
        ("data:image/png;base64", "image data URL cannot be read: not a data: URL"),
        (
            "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(1024 * 1024)).decode(),
            "larger than",
        ),
        ("data:image/bmp;base64," + base64.b64encode(b"BM" + bytes(100)).decode(), "PNG only"),
    ],
    ids=["bad-base64", "no-comma", "too-large", "route-rule"],
)
def test_a_data_url_that_cannot_be_read_or_breaks_a_rule_fails_the_task(
    toy: _ToySimulator, url: str, reason: str
) -> None:
    task_id = _create(toy, url)
    finished = toy.wait_for_status(task_id)
    assert finished["state"] == "error"
    assert reason in (finished["failure_reason"] or "")


def test_data_url_bytes_and_the_body_limit_made_for_data_urls() -> None:
    assert core.data_url_bytes("data:text/plain,a%20b") == b"a b"
    assert core.data_url_bytes("data:;base64,AAEC") == b"\x00\x01\x02"
    with pytest.raises(ValueError, match="not a data: URL"):
        core.data_url_bytes("https://example.com/a.png")
    assert core.is_data_url("data:,x") and not core.is_data_url("data:x")
    # A 3 MB image is 4 MB of base64: the limit keeps the JSON around it room too.
    assert core.data_url_body_max(3 * 1024 * 1024) == core.REQUEST_BODY_MAX_BYTES + 4 * 1024 * 1024


def test_a_body_over_the_route_limit_answers_413(toy: _ToySimulator) -> None:
    response = httpx.post(f"{toy.url}/jobs", content=b"x" * (toy.BODY_MAX_BYTES + 1))
    assert (response.status_code, response.json()) == (413, {"error": "toy 413"})
    assert toy.state()["counters"]["create_requests"] == 0


# -- injected errors and the rate window ---------------------------------------------------------


def test_submit_errors_and_unknown_paths_use_the_route_error_bodies(toy: _ToySimulator) -> None:
    # Given a 429 with Retry-After, and a status the route has no body for
    bad = httpx.post(f"{toy.url}/_sim/faults", json={"submit_errors": [500]})
    httpx.post(f"{toy.url}/_sim/faults", json={"submit_errors": [429], "retry_after": 3})

    # When
    limited = httpx.post(f"{toy.url}/jobs", json={"image": "http://127.0.0.1:1/a.png"})
    invalid = httpx.post(f"{toy.url}/jobs", content=b"not json")
    unknown = httpx.get(f"{toy.url}/nowhere")

    # Then
    assert bad.status_code == 400 and "[429, 503]" in bad.json()["message"]
    assert (limited.status_code, limited.json(), limited.headers["retry-after"]) == (
        429,
        {"error": "toy 429"},
        "3",
    )
    assert (invalid.status_code, invalid.json()) == (422, {"error": "image is required"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "toy 404"})
    records = toy.state()["create_requests"]
    assert [record["response_status"] for record in records] == [429, 422]
    assert records[1]["body"] == "not json"
    assert json.loads(httpx.get(f"{toy.url}/_sim/faults").text)["faults"]["submit_errors"] == []


def test_status_errors_answer_the_next_reads_in_order_then_the_reads_go_through(
    toy: _ToySimulator, images: str
) -> None:
    # Given a task, then two injected status errors (Retry-After on the 429 only)
    task_id = _create(toy, f"{images}/a.png")
    answer = httpx.post(f"{toy.url}/_sim/faults", json={"status_errors": [429, 503], "retry_after": 4})
    assert answer.json()["faults"]["status_errors"] == [429, 503]

    # When it is read three times, and another task is created meanwhile
    reads = [_read(toy, task_id) for _ in range(2)]
    _create(toy, f"{images}/b.png")
    after = _read(toy, task_id)

    # Then the reads answered the route's bodies in order; create calls were not touched
    assert [(r.status_code, r.json(), r.headers.get("retry-after")) for r in reads] == [
        (429, {"error": "toy 429"}, "4"),
        (503, {"error": "toy 503"}, None),
    ]
    assert after.status_code == 200 and after.json()["id"] == task_id
    assert toy.faults()["status_errors"] == []
    assert toy.state()["counters"]["tasks_created"] == 2


def test_status_errors_are_validated_against_the_route_statuses(toy: _ToySimulator) -> None:
    bad = httpx.post(f"{toy.url}/_sim/faults", json={"status_errors": [418]})
    assert bad.status_code == 400 and bad.json()["message"].startswith("status_errors must be")
    with pytest.raises(ValueError, match="status_errors"):
        toy.set_faults(status_errors=429)
    assert toy.faults()["status_errors"] == []


def test_reads_past_the_poll_rate_answer_429_until_the_second_is_over() -> None:
    with _ToySimulator(poll_rate_per_second=2) as toy:
        # Given / When three reads at once
        answers = [_read(toy, str(uuid.uuid4())) for _ in range(3)]

        # Then the third is refused with the route's body, not counted, and a second later
        # the reads go through again
        assert [answer.status_code for answer in answers] == [404, 404, 429]
        assert answers[2].json() == {"error": "toy 429"}
        time.sleep(1.05)
        assert _read(toy, str(uuid.uuid4())).status_code == 404


def test_without_a_poll_rate_reads_are_not_limited(toy: _ToySimulator) -> None:
    assert {_read(toy, str(uuid.uuid4())).status_code for _ in range(30)} == {404}


def test_the_rate_window_admits_rate_events_per_second() -> None:
    window = core.RateWindow(3)
    assert [window.admit() for _ in range(4)] == [True, True, True, False]
    time.sleep(1.05)
    assert window.admit()
    with pytest.raises(ValueError, match="poll_rate_per_second"):
        _ToySimulator(poll_rate_per_second=-1)


# -- forgetting a task --------------------------------------------------------------------------


def test_a_forgotten_task_answers_as_an_unknown_one_and_sends_no_webhook(
    images: str, receiver: _Receiver
) -> None:
    with _ToySimulator(render_max_long_side=64, progress_delay=0.3) as toy:
        # Given a finished task, and one still CREATED with a webhook URL
        done = _create(toy, f"{images}/b.png")
        toy.wait_for_status(done)
        pending = _create(toy, f"{images}/a.png", hook=receiver.url)

        # When both are forgotten, one through the control API
        forgotten = httpx.post(f"{toy.url}/_sim/forget/{pending}")
        assert toy.forget(done) is True

        # Then both read as unknown, the video is gone, and the first never sends a webhook
        assert (forgotten.status_code, forgotten.json()) == (200, {"forgotten": pending})
        unknown = _read(toy, str(uuid.uuid4()))
        for task_id in (pending, done):
            read = _read(toy, task_id)
            assert (read.status_code, read.json()) == (unknown.status_code, unknown.json())
            assert toy.task(task_id) is None
        assert httpx.get(f"{toy.url}/videos/{done}.mp4").status_code == 404
        time.sleep(1.0)  # past both progress delays: its worker would have sent two by now
        assert receiver.bodies == []
        state = toy.state()
        assert state["tasks"] == [] and state["tasks_by_status"]["done"] == 0
        assert state["counters"]["tasks_created"] == 2 and len(state["create_requests"]) == 2


def test_forgetting_an_unknown_task_says_so(toy: _ToySimulator) -> None:
    unknown = httpx.post(f"{toy.url}/_sim/forget/nope")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "no task nope"})
    assert toy.forget("nope") is False


def test_a_forgotten_task_gets_no_further_webhook_attempt(images: str) -> None:
    receiver = _Receiver(status=500)
    try:
        with _ToySimulator(render_max_long_side=64, progress_delay=0.0) as toy:
            # Given a receiver that fails, and deliveries retried after 0.5 s, 1 s, ...
            toy.set_faults(webhook_retries=5)
            task_id = _create(toy, f"{images}/a.png", hook=receiver.url)
            _wait_until(lambda: len(receiver.bodies) >= 1)

            # When the task is forgotten while its first webhook waits for a retry
            toy.forget(task_id)
            time.sleep(1.0)

            # Then no attempt followed
            assert len(receiver.bodies) == 1
            assert [record["attempt"] for record in toy.state()["webhooks"]] == [1]
    finally:
        receiver.close()
