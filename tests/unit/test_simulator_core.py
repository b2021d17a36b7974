"""The simulators' core under a toy route with its own status names, paths and error bodies:
what a route module gets from the core without writing it, over real loopback HTTP."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal

import httpx
import pytest
from PIL import Image

from local.simulators import core
from local.simulators.core import Reply, SimTask, State, TaskFailed, json_reply


@dataclass(frozen=True)
class _Request:
    image_url: str
    resolution: Literal["720P", "1080P"] = "720P"
    duration: int = 3
    webhook_url: str | None = None


class _Faults(core.Faults):
    SUBMIT_ERROR_STATUSES: ClassVar[frozenset[int]] = frozenset({429})


class _ToySimulator(core.Simulator[_Request]):
    """A polling route: `POST /jobs`, `GET /jobs/{id}`, lower-case statuses, no webhooks."""

    ROUTE = "toy"
    TITLE = "Toy"
    STATUS_NAMES: ClassVar[Mapping[State, str]] = {
        State.CREATED: "queued",
        State.IN_PROGRESS: "running",
        State.COMPLETED: "done",
        State.FAILED: "error",
    }
    IMAGE_MAX_BYTES = 1024 * 1024
    FAULTS = _Faults

    def route(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        if path == "/jobs" and method == "POST":
            return self.submit("toy-1", body, headers)
        if path.startswith("/jobs/") and method == "GET":
            task = self.find_task(path.removeprefix("/jobs/"))
            return self.error_reply(404) if task is None else json_reply(200, self.task_body(task))
        return None

    def parse_request(self, body: object, headers: Mapping[str, str]) -> _Request | Reply:
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            return json_reply(422, {"error": "image is required"})
        return _Request(image_url=body["image"])

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


@pytest.fixture
def images() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def toy() -> Iterator[_ToySimulator]:
    with _ToySimulator(render_max_long_side=64, progress_delay=0.0) as simulator:
        yield simulator


def test_a_route_gets_the_lifecycle_in_its_own_status_names(toy: _ToySimulator, images: str) -> None:
    # Given / When a task is created on the toy route
    created = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"})
    task_id = created.json()["id"]

    # Then the route's reply, its status names, and the core's video and state
    assert (created.status_code, created.json()["state"]) == (201, "queued")
    assert toy.wait_for_status(task_id)["state"] == "done"
    status = httpx.get(f"{toy.url}/jobs/{task_id}").json()
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
    refused = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.bmp"}).json()["id"]
    toy.set_faults(fail_tasks=1)
    forced = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/b.png"}).json()["id"]

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


def test_submit_errors_and_unknown_paths_use_the_route_error_bodies(toy: _ToySimulator) -> None:
    # Given a 429 with Retry-After, and a status the route has no body for
    bad = httpx.post(f"{toy.url}/_sim/faults", json={"submit_errors": [503]})
    httpx.post(f"{toy.url}/_sim/faults", json={"submit_errors": [429], "retry_after": 3})

    # When
    limited = httpx.post(f"{toy.url}/jobs", json={"image": "http://127.0.0.1:1/a.png"})
    invalid = httpx.post(f"{toy.url}/jobs", content=b"not json")
    unknown = httpx.get(f"{toy.url}/nowhere")

    # Then
    assert bad.status_code == 400 and "[429]" in bad.json()["message"]
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
