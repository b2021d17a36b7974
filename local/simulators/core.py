"""What every route's simulator shares; a route's module adds only its wire format.

The core owns the task store and its lifecycle (the neutral `State`s a wire module maps to
its status names, with the time each was reached), the control API (`/_sim/faults`,
`/_sim/state`, `/_sim/reset`, `/_sim/forget/{task_id}`), fault injection on create calls,
status reads and tasks, a one-second rate window on status reads, one worker per task
(image fetch through the presigned URL or from a `data:` URL, the route's image check,
rendering with local/render.py), video serving at `/videos/{task_id}.mp4`, webhook
delivery (drop, duplicate, delay, retry; one record per attempt), the HTTP server (each
request handed to the route with its query parsed) and the command line. A route
subclasses `Simulator` and fills in its hooks: the API routes, request parsing, task and
webhook bodies, error bodies and webhook signing. See docs/simulator.md ("The core").
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeGuard, TypeVar
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit, urlunsplit

import httpx

from local.render import Resolution, render_video_file
from local.service import BackgroundService

HTTP_TIMEOUT_SECONDS = 10.0
REQUEST_BODY_MAX_BYTES = 1024 * 1024
WEBHOOK_RETRY_MAX_DELAY_SECONDS = 10.0
STOP_JOIN_SECONDS = 15.0

_VIDEO_PATH = re.compile(r"^/videos/([A-Za-z0-9-]+)\.mp4$")
_FORGET_PATH = re.compile(r"^/_sim/forget/([^/]+)$")

COUNTERS = (
    "create_requests",
    "tasks_created",
    "webhooks_sent",
    "webhooks_delivered",
    "webhooks_failed",
    "webhooks_dropped",
)


class State(StrEnum):
    """A task's place in its lifecycle; each wire module names these its own way."""

    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED})


class TaskRequest(Protocol):
    """What the core needs of a route's parsed create request (a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def image_url(self) -> str: ...

    @property
    def resolution(self) -> Resolution: ...

    @property
    def duration(self) -> int: ...

    @property
    def webhook_url(self) -> str | None: ...


R = TypeVar("R", bound=TaskRequest)


@dataclass(frozen=True)
class HttpRequest:
    """One request as a route's `route()` gets it."""

    method: str
    path: str  # without the query string
    query: Mapping[str, list[str]]  # every value of each parameter, blank ones kept
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def param(self, name: str) -> str | None:
        """The first value of query parameter `name`, or None when it is absent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Faults:
    """Faults to inject; counts apply to the next N create calls, status reads or tasks.

    A route narrows `ERROR_STATUSES` to the statuses it has error bodies for (the ones
    `submit_errors` and `status_errors` may hold).
    """

    ERROR_STATUSES: ClassVar[frozenset[int]] = frozenset(range(400, 600))

    submit_errors: list[int] = field(default_factory=list)
    status_errors: list[int] = field(default_factory=list)
    retry_after: int | None = None  # sent with injected 429s, on create calls and status reads
    drop_webhooks: int = 0
    fail_tasks: int = 0
    duplicate_webhooks: bool = False
    webhook_delay: float = 0.0
    webhook_retries: int = 0

    def updated(self, changes: Mapping[str, object]) -> Self:
        """A copy with `changes` applied; ValueError names the first bad field."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        for name, value in changes.items():
            self._check(name, value)
        merged = replace(self, **changes)  # type: ignore[arg-type]
        merged.submit_errors = list(merged.submit_errors)
        merged.status_errors = list(merged.status_errors)
        return merged

    def _check(self, name: str, value: object) -> None:
        if name in ("submit_errors", "status_errors"):
            allowed = self.ERROR_STATUSES
            valid = isinstance(value, list) and all(is_int(v) and v in allowed for v in value)
            expected = f"a list of statuses among {sorted(allowed)}"
        elif name == "retry_after":
            valid = value is None or (is_int(value) and value >= 0)
            expected = "null or a whole number of seconds >= 0"
        elif name == "duplicate_webhooks":
            valid = isinstance(value, bool)
            expected = "true or false"
        elif name == "webhook_delay":
            valid = is_number(value) and value >= 0
            expected = "a number of seconds >= 0"
        else:
            valid = is_int(value) and value >= 0
            expected = "an integer >= 0"
        if not valid:
            raise ValueError(f"{name} must be {expected}")


@dataclass
class SimTask(Generic[R]):
    task_id: str
    model: str
    request: R
    created_at: float
    state: State = State.CREATED
    video_url: str | None = None
    failure_reason: str | None = None
    drop_webhooks: bool = False
    forced_failure: bool = False
    # When each state was reached (time.time()); set by the core, read by task bodies.
    times: dict[State, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    file: Path | None = None


class TaskFailed(Exception):
    """The task ends FAILED; the message is the reason kept in the simulator's state."""


class _TaskAbandoned(Exception):
    """The task is no longer stored (forgotten, reset, or replaced by a route's cancel) or
    the simulator stops: its worker stops quietly."""


class Simulator(BackgroundService, Generic[R]):
    """An HTTP server on a background thread plus one worker thread per task.

    Use it as a context manager, or call `start()` and `stop()`. `url` is its base URL
    (set `public_url` when clients reach it through another address, e.g. from a container).
    Subclasses set the class attributes and implement the hooks below `# -- wire hooks`.
    """

    ROUTE: ClassVar[str]  # module name, e.g. "magnific": logger, thread and server names
    TITLE: ClassVar[str]  # for people, e.g. "Magnific"
    STATUS_NAMES: ClassVar[Mapping[State, str]]  # the wire's name for each state
    IMAGE_MAX_BYTES: ClassVar[int]  # the fetch stops reading (or decoding) past this size
    FAULTS: ClassVar[type[Faults]] = Faults
    # Larger bodies answer 413; a route taking data: URLs makes room (`data_url_body_max`).
    BODY_MAX_BYTES: ClassVar[int] = REQUEST_BODY_MAX_BYTES

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        render_max_long_side: int | None = None,
        progress_delay: float = 0.2,
        render_workers: int = 2,
        public_url: str | None = None,
        poll_rate_per_second: float | None = None,
    ) -> None:
        if render_max_long_side is not None and render_max_long_side < 16:
            raise ValueError("render_max_long_side must be at least 16 pixels")
        if render_workers < 1:
            raise ValueError("render_workers must be at least 1")
        if poll_rate_per_second is not None and poll_rate_per_second < 0:
            raise ValueError("poll_rate_per_second must be >= 0 (0 or None: no limit)")
        # Named, not __name__: the same logger whether imported or run with `python -m`.
        self.logger = logging.getLogger(f"local.simulators.{self.ROUTE}")
        self._host = host
        self._port = port
        self._render_max_long_side = render_max_long_side
        self._progress_delay = progress_delay
        self._render_slots = threading.BoundedSemaphore(render_workers)
        self._public_url = public_url.rstrip("/") if public_url else None
        self._status_reads = RateWindow(poll_rate_per_second) if poll_rate_per_second else None

        self._lock = threading.Condition()
        self._tasks: dict[str, SimTask[R]] = {}
        self._faults = self.FAULTS()
        self._counters: Counter[str] = Counter()
        self._create_requests: list[dict[str, Any]] = []
        self._webhooks: list[dict[str, Any]] = []
        self._workers: set[threading.Thread] = set()
        self._stopping = threading.Event()

        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._video_dir: tempfile.TemporaryDirectory[str] | None = None

    # -- wire hooks (a route's module implements these) ----------------------------------

    def route(self, request: HttpRequest) -> Reply | None:
        """Answer a request to the route's API, or None when the path is not one of its.

        A create call goes to `self.submit(request, model)`; a status, poll or result read
        starts with `self.refused_status_read()`."""
        raise NotImplementedError

    def parse_request(self, body: object, request: HttpRequest) -> R | Reply:
        """The create body (JSON, or None when not JSON) as a request, or the error reply;
        `request` has the call's headers and query."""
        raise NotImplementedError

    def created_reply(self, task: SimTask[R]) -> Reply:
        """The answer to a create call that made `task` (taken while it is still CREATED)."""
        raise NotImplementedError

    def task_body(self, task: SimTask[R]) -> dict[str, Any]:
        """The task object as the route sends it (also the base of `task()` summaries)."""
        raise NotImplementedError

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        """The route's error answer for an HTTP status (404, 405, 413, injected errors and
        the rate window's 429)."""
        raise NotImplementedError

    def check_image(self, data: bytes) -> None:
        """Apply the route's image rules; raise TaskFailed with the reason."""
        raise NotImplementedError

    def webhook_body(self, task: SimTask[R]) -> Mapping[str, Any] | None:
        """The webhook for the task's new state, or None when the route sends none for it."""
        return None

    def webhook_headers(self, webhook_id: str, body: str) -> dict[str, str]:
        """Headers of one delivery attempt (signed afresh for each attempt)."""
        return {"content-type": "application/json"}

    def listening_socket(self, sock: socket.socket) -> socket.socket:
        """The listening socket as the server will use it: a route serving HTTPS returns it
        wrapped (`ssl.SSLContext.wrap_socket(sock, server_side=True)`); as is by default."""
        return sock

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._video_dir = tempfile.TemporaryDirectory(prefix=f"{self.ROUTE}-sim-")
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
        self._server = _Server((self._host, self._port), self)
        self._server.socket = self.listening_socket(self._server.socket)
        # A short poll interval makes stop() quick: shutdown waits for the serving loop's next poll.
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"{self.ROUTE}-sim", daemon=True
        )
        self._serve_thread.start()
        self.logger.info("%s simulator listening on %s", self.TITLE, self.url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            self._http.close()
        if self._video_dir is not None:
            self._video_dir.cleanup()
        self._server = self._serve_thread = self._http = self._video_dir = None
        self.logger.info("%s simulator stopped", self.TITLE)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:8090 (no trailing slash)."""
        return self._public_url or f"http://{self._host}:{self.port}"

    # -- control API (also served under /_sim/) ---------------------------------------------

    def set_faults(self, **changes: object) -> dict[str, Any]:
        """Change the given faults (others keep their value); return all of them."""
        with self._lock:
            self._faults = self._faults.updated(changes)
            return asdict(self._faults)

    def faults(self) -> dict[str, Any]:
        """The faults still pending."""
        with self._lock:
            return asdict(self._faults)

    def reset(self) -> None:
        """Forget tasks, videos, counters, recorded requests and faults."""
        with self._lock:
            self._tasks.clear()
            self._faults = self.FAULTS()
            self._counters.clear()
            self._create_requests.clear()
            self._webhooks.clear()
            if self._video_dir is not None:
                for video in Path(self._video_dir.name).glob("*.mp4"):
                    video.unlink(missing_ok=True)
            self._lock.notify_all()

    def forget(self, task_id: str) -> bool:
        """Drop a task as the provider does an expired one: from now on the route answers for
        its id as for an unknown id, its video is gone, and it sends no more webhooks (its
        worker stops at its next step, a delivery under way at its next attempt). The
        records in `state()` stay. False when no such task is stored."""
        with self._lock:
            task = self._tasks.pop(task_id, None)
            self._lock.notify_all()
        if task is None:
            return False
        if self._video_dir is not None:
            self._video_path(task_id).unlink(missing_ok=True)
        self.logger.info("task %s forgotten", task_id)
        return True

    def state(self) -> dict[str, Any]:
        """Counters, tasks by status, faults and the recorded create requests and webhooks."""
        with self._lock:
            by_state = Counter(task.state for task in self._tasks.values())
            return {
                "counters": {name: self._counters[name] for name in COUNTERS},
                "tasks_by_status": {self.STATUS_NAMES[state]: by_state[state] for state in State},
                "faults": asdict(self._faults),
                "create_requests": [dict(record) for record in self._create_requests],
                "tasks": [self._task_summary(task) for task in self._tasks.values()],
                "webhooks": [dict(record) for record in self._webhooks],
            }

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else self._task_summary(task)

    def wait_for_status(
        self,
        task_id: str,
        statuses: Collection[str] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Block until the task reaches one of `statuses` (wire names; default: the terminal
        ones); TimeoutError after `timeout` s."""
        wanted = statuses if statuses is not None else {self.STATUS_NAMES[state] for state in TERMINAL_STATES}
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                task = self._tasks.get(task_id)
                if task is not None and self.STATUS_NAMES[task.state] in wanted:
                    return self._task_summary(task)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    current = self.STATUS_NAMES[task.state] if task else "unknown"
                    raise TimeoutError(f"task {task_id} still {current} after {timeout} s")
                self._lock.wait(remaining)

    def _task_summary(self, task: SimTask[R]) -> dict[str, Any]:
        return {
            **self.task_body(task),
            "model": task.model,
            "failure_reason": task.failure_reason,
            "request": asdict(task.request),
        }

    # -- for the wire module ------------------------------------------------------------------

    def status_name(self, task: SimTask[R]) -> str:
        return self.STATUS_NAMES[task.state]

    def find_task(self, task_id: str) -> SimTask[R] | None:
        """The stored task (the caller reads it under `locked()` if it needs a consistent view)."""
        with self._lock:
            return self._tasks.get(task_id)

    def tasks(self, model: str | None = None) -> list[SimTask[R]]:
        """Tasks (of `model` if given), newest first."""
        with self._lock:
            chosen = [task for task in self._tasks.values() if model is None or task.model == model]
        return sorted(chosen, key=lambda task: task.created_at, reverse=True)

    def locked(self) -> threading.Condition:
        """The lock guarding tasks, faults and records."""
        return self._lock

    def submit(self, request: HttpRequest, model: str | None = None) -> Reply:
        """Handle a create call: record it, answer an injected error, or parse and start a task.

        `model` is the one the path names; None takes the body's `model` field (a route
        whose model is in the body), "" when it has none."""
        body = parse_json(request.body)
        if model is None:
            named = body.get("model") if isinstance(body, dict) else None
            model = named if isinstance(named, str) else ""
        with self._lock:
            self._counters["create_requests"] += 1
            record: dict[str, Any] = {
                "model": model,
                "body": body if body is not None else request.body.decode(errors="replace"),
                "received_at": time.time(),
                "response_status": None,
                "task_id": None,
            }
            self._create_requests.append(record)
            if self._faults.submit_errors:
                record["response_status"] = status = self._faults.submit_errors.pop(0)
                retry_after = self._faults.retry_after if status == 429 else None
                return self.error_reply(status, retry_after=retry_after)
            parsed = self.parse_request(body, request)
            if isinstance(parsed, Reply):
                record["response_status"] = parsed.status
                return parsed
            task = self._new_task(model, parsed)
            # Taken before the worker starts: the answer says CREATED however fast the task runs.
            created = self.created_reply(task)
            record["response_status"], record["task_id"] = created.status, task.task_id
        self._start_worker(task)
        self.logger.info(
            "task %s %s (%s, %d s)",
            task.task_id,
            self.STATUS_NAMES[State.CREATED],  # not the task's own: it may have moved on
            parsed.resolution,
            parsed.duration,
        )
        return created

    def refused_status_read(self) -> Reply | None:
        """The answer to a status, poll or result read that does not get through: the next
        injected `status_errors` status (429 with the `retry_after` fault), else the route's
        429 past `poll_rate_per_second` reads in the last second. None: answer the read."""
        with self._lock:
            if self._faults.status_errors:
                status = self._faults.status_errors.pop(0)
                retry_after = self._faults.retry_after if status == 429 else None
                return self.error_reply(status, retry_after=retry_after)
        if self._status_reads is not None and not self._status_reads.admit():
            return self.error_reply(429)
        return None

    def _new_task(self, model: str, request: R) -> SimTask[R]:
        """Create and store a task, consuming the per-task faults (caller holds the lock)."""
        now = time.time()
        task_id = str(uuid.uuid4())
        task = SimTask(task_id, model, request, created_at=now, times={State.CREATED: now})
        if self._faults.drop_webhooks > 0:
            self._faults.drop_webhooks -= 1
            task.drop_webhooks = True
        if self._faults.fail_tasks > 0:
            self._faults.fail_tasks -= 1
            task.forced_failure = True
        self._tasks[task.task_id] = task
        self._counters["tasks_created"] += 1
        return task

    def video_url(self, task_id: str) -> str:
        return f"{self.url}/videos/{task_id}.mp4"

    def pipeline_settings(self) -> dict[str, str]:
        """The route settings (names after the route's prefix) that point the pipeline here."""
        return {"BASE_URL": self.url}

    # -- HTTP routing -----------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> Reply:
        """Answer one HTTP request."""
        if request.path.startswith("/_sim/"):
            return self._handle_control(request.method, request.path, request.body)
        if match := _VIDEO_PATH.match(request.path):
            if request.method not in ("GET", "HEAD"):
                return self.error_reply(405)
            return self._video(match.group(1))
        reply = self.route(request)
        return reply if reply is not None else self.error_reply(404)

    def _handle_control(self, method: str, path: str, body: bytes) -> Reply:
        if (method, path) == ("POST", "/_sim/faults"):
            return self._post_faults(body)
        if method == "POST" and (match := _FORGET_PATH.match(path)):
            return self._post_forget(match.group(1))
        if (method, path) == ("POST", "/_sim/reset"):
            self.reset()
            return json_reply(200, self.state())
        if (method, path) == ("GET", "/_sim/faults"):
            return json_reply(200, {"faults": self.faults()})
        if (method, path) == ("GET", "/_sim/state"):
            return json_reply(200, self.state())
        return self.error_reply(404)

    def _post_faults(self, body: bytes) -> Reply:
        changes = parse_json(body)
        if not isinstance(changes, dict):
            return json_reply(400, {"message": "the body must be a JSON object of faults"})
        try:
            return json_reply(200, {"faults": self.set_faults(**changes)})
        except ValueError as exc:
            return json_reply(400, {"message": str(exc)})

    def _post_forget(self, task_id: str) -> Reply:
        if self.forget(task_id):
            return json_reply(200, {"forgotten": task_id})
        return json_reply(404, {"message": f"no task {task_id}"})

    def _video(self, task_id: str) -> Reply:
        with self._lock:
            task = self._tasks.get(task_id)
            ready = task is not None and task.state is State.COMPLETED
        video = self._video_path(task_id)
        if not ready or not video.is_file():
            return self.error_reply(404)
        return Reply(200, content_type="video/mp4", file=video)

    def _video_path(self, task_id: str) -> Path:
        if self._video_dir is None:
            raise RuntimeError("the simulator is not running")
        return Path(self._video_dir.name) / f"{task_id}.mp4"

    # -- task work --------------------------------------------------------------------------

    def _start_worker(self, task: SimTask[R]) -> None:
        worker = threading.Thread(
            target=self._run_task, args=(task,), name=f"task-{task.task_id[:8]}", daemon=True
        )
        with self._lock:
            self._workers.add(worker)
        worker.start()

    def _run_task(self, task: SimTask[R]) -> None:
        try:
            self._work_on(task)
        except TaskFailed as failure:
            self._fail(task, str(failure))
        except _TaskAbandoned:
            self.logger.info("task %s abandoned (no longer stored, or the simulator stopped)", task.task_id)
        except Exception:
            self.logger.exception("task %s: unexpected error", task.task_id)
            self._fail(task, "internal error in the simulator")
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _work_on(self, task: SimTask[R]) -> None:
        self._pause(self._progress_delay)
        image = self._fetch_image(task.request.image_url)
        self.check_image(image)
        self._advance(task, State.IN_PROGRESS)
        self._pause(self._progress_delay)
        if task.forced_failure:
            raise TaskFailed("simulated failure (fault injection)")
        path = self._video_path(task.task_id)
        with self._render_slots:
            try:
                render_video_file(
                    image,
                    path,
                    duration=task.request.duration,
                    resolution=task.request.resolution,
                    max_long_side=self._render_max_long_side,
                )
            except ValueError as exc:
                raise TaskFailed("image cannot be decoded") from exc
        self._advance(task, State.COMPLETED, video_url=self.video_url(task.task_id))

    def _fail(self, task: SimTask[R], reason: str) -> None:
        with contextlib.suppress(_TaskAbandoned):
            self._advance(task, State.FAILED, failure_reason=reason)

    def _fetch_image(self, url: str) -> bytes:
        """The image at `url`: fetched over HTTP, or decoded from a `data:` URL (a route
        that does not take those refuses them when it validates the create call)."""
        limit = self.IMAGE_MAX_BYTES
        if url.startswith("data:"):
            try:
                image = data_url_bytes(url)
            except ValueError as exc:
                raise TaskFailed(f"image data URL cannot be read: {exc}") from exc
            if len(image) > limit:
                raise TaskFailed(f"image is larger than {limit // (1024 * 1024)} MB")
            return image
        if self._http is None:
            raise _TaskAbandoned
        try:
            with self._http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise TaskFailed(f"image could not be fetched: HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise TaskFailed(f"image is larger than {limit // (1024 * 1024)} MB")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise TaskFailed(f"image could not be fetched: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def _advance(
        self,
        task: SimTask[R],
        state: State,
        *,
        video_url: str | None = None,
        failure_reason: str | None = None,
    ) -> None:
        """Record a state change, then send its webhook (after, so a status read agrees)."""
        with self._lock:
            self._check_stored(task)
            task.state = state
            task.video_url = video_url
            task.failure_reason = failure_reason
            task.times[state] = time.time()
            status = self.status_name(task)
            payload = self.webhook_body(task)
            faults = replace(self._faults)
            self._lock.notify_all()
        self.logger.info(
            "task %s %s%s", task.task_id, status, f": {failure_reason}" if failure_reason else ""
        )
        webhook_url = task.request.webhook_url
        if webhook_url is None or payload is None:
            return
        if task.drop_webhooks:
            with self._lock:
                self._counters["webhooks_dropped"] += 1
            self.logger.info("webhook task=%s status=%s dropped (fault injection)", task.task_id, status)
            return
        self._pause(faults.webhook_delay)
        body = json.dumps(payload, separators=(",", ":"))
        webhook_id = f"msg_{uuid.uuid4().hex}"
        for _ in range(2 if faults.duplicate_webhooks else 1):
            self._deliver(webhook_url, webhook_id, body, task, status, faults.webhook_retries)

    def _check_stored(self, task: SimTask[R]) -> None:
        """Raise _TaskAbandoned once the task was forgotten (or reset) or the simulator stops
        (the caller holds the lock)."""
        if self._stopping.is_set() or self._tasks.get(task.task_id) is not task:
            raise _TaskAbandoned

    def _deliver(
        self, url: str, webhook_id: str, body: str, task: SimTask[R], status: str, retries: int
    ) -> None:
        """POST one webhook; with `retries` > 0, retry failures with a backoff.

        Every attempt keeps the webhook id and gets fresh headers (`webhook_headers`), as
        Standard Webhooks senders do (the providers' own behaviour is unknown). A task
        forgotten meanwhile gets no further attempt.
        """
        task_id = task.task_id
        for attempt in range(1, retries + 2):
            with self._lock:
                self._check_stored(task)
            started = time.monotonic()
            answer, retry_after = self._post_webhook(url, webhook_id, body)
            elapsed_ms = (time.monotonic() - started) * 1000
            delivered = isinstance(answer, int) and 200 <= answer < 300
            with self._lock:
                self._counters["webhooks_sent"] += 1
                self._counters["webhooks_delivered" if delivered else "webhooks_failed"] += 1
                self._webhooks.append(
                    {
                        "task_id": task_id,
                        "status": status,
                        "webhook_id": webhook_id,
                        "url": url,
                        "attempt": attempt,
                        "response_status": answer if isinstance(answer, int) else None,
                        "error": None if isinstance(answer, int) else answer,
                        "sent_at": time.time(),
                        # How long the receiver took to answer (or until the timeout).
                        "elapsed_ms": round(elapsed_ms, 1),
                    }
                )
            self.logger.info(
                "webhook task=%s status=%s to %s attempt %d -> %s",
                task_id,
                status,
                without_query(url),
                attempt,
                answer,
            )
            if delivered or attempt > retries:
                return
            backoff = 0.5 * 2 ** (attempt - 1)
            self._pause(min(retry_after or backoff, WEBHOOK_RETRY_MAX_DELAY_SECONDS))

    def _post_webhook(self, url: str, webhook_id: str, body: str) -> tuple[int | str, float | None]:
        """Send one attempt; return (HTTP status or error name, Retry-After seconds if given)."""
        if self._http is None:
            raise _TaskAbandoned
        headers = self.webhook_headers(webhook_id, body)
        try:
            response = self._http.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__, None
        return response.status_code, _seconds(response.headers.get("retry-after"))

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _TaskAbandoned


# -- HTTP plumbing ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator[Any]) -> None:
        super().__init__(address, _RequestHandler)
        self.simulator = simulator


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        assert isinstance(self.server, _Server)
        return f"{self.server.simulator.TITLE}Simulator/1.0 {self.sys_version}"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        started = time.monotonic()
        assert isinstance(self.server, _Server)
        simulator = self.server.simulator
        target = urlsplit(self.path)
        path = target.path
        length = int(self.headers.get("content-length") or 0)
        if length > simulator.BODY_MAX_BYTES:
            self.close_connection = True
            reply = simulator.error_reply(413)
        else:
            request = HttpRequest(
                method=method,
                path=path,
                query=parse_qs(target.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            reply = simulator.handle(request)
        self._send(reply, include_body=method != "HEAD")
        # One line per request: no headers (API key), no query string (presigned URLs).
        simulator.logger.info(
            "%s %s -> %d (%.0f ms)", method, path, reply.status, (time.monotonic() - started) * 1000
        )

    def _send(self, reply: Reply, *, include_body: bool) -> None:
        length = reply.file.stat().st_size if reply.file else len(reply.body)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(length))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if not include_body:
            return
        try:
            if reply.file is not None:
                with reply.file.open("rb") as video:
                    shutil.copyfileobj(video, self.wfile)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_serve` writes the request line itself, without the query string."""

    def log_message(self, format: str, *args: Any) -> None:
        assert isinstance(self.server, _Server)
        self.server.simulator.logger.warning("http: " + format, *args)


# -- helpers for wire modules ------------------------------------------------------------------


def json_reply(
    status: int,
    payload: object,
    *,
    content_type: str = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    return Reply(status, json.dumps(payload).encode(), content_type, headers)


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body, or None when it is not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def is_data_url(url: str) -> bool:
    """Whether `url` has the form of a `data:` URL (`data:[<type>][;base64],<data>`)."""
    return url.startswith("data:") and "," in url


def data_url_bytes(url: str) -> bytes:
    """The bytes a `data:` URL carries (base64 or percent-encoded); ValueError says why not."""
    if not is_data_url(url):
        raise ValueError("not a data: URL")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        return unquote_to_bytes(data)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ValueError("not valid base64") from exc


def data_url_body_max(image_max_bytes: int) -> int:
    """A create body limit with room for a base64 `data:` URL of the largest image."""
    return REQUEST_BODY_MAX_BYTES + -(-image_max_bytes // 3) * 4


class RateWindow:
    """Admits at most `rate` events in any one-second window (thread-safe)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Count one event if it fits the window; False (not counted) when it does not."""
        now = time.monotonic()
        with self._lock:
            while self._admitted and now - self._admitted[0] >= 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self._rate:
                return False
            self._admitted.append(now)
            return True


def without_query(url: str) -> str:
    """The URL without query and fragment: webhook tokens and signatures stay out of logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# -- command line ------------------------------------------------------------------------------


def cli_parser(
    route: str, description: str, *, default_port: int, default_poll_rate: float | None = None
) -> argparse.ArgumentParser:
    """A parser with the options every simulator has; the route adds its credentials. A
    polling route gives `default_poll_rate` (0: no limit) to get `--poll-rate`."""
    parser = argparse.ArgumentParser(prog=f"python -m local.simulators.{route}", description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=default_port, help="port, 0 for any (default: %(default)s)"
    )
    parser.add_argument(
        "--render-max-long-side",
        type=int,
        default=None,
        help="cap the video's long side in pixels for faster renders",
    )
    parser.add_argument(
        "--progress-delay",
        type=float,
        default=0.2,
        help="seconds spent in each of CREATED and IN_PROGRESS before rendering (default: %(default)s)",
    )
    parser.add_argument(
        "--render-workers",
        type=int,
        default=2,
        help="videos rendered at the same time (default: %(default)s)",
    )
    parser.add_argument(
        "--public-url", default=None, help="base URL put in video links (default: the listening address)"
    )
    if default_poll_rate is not None:
        parser.add_argument(
            "--poll-rate",
            type=float,
            default=default_poll_rate,
            help="status reads per second before 429, 0 for no limit (default: %(default)s)",
        )
    parser.add_argument("--log-level", default="INFO", help="(default: %(default)s)")
    return parser


def common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Simulator` keyword arguments from the options `cli_parser` added."""
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "render_max_long_side": args.render_max_long_side,
        "progress_delay": args.progress_delay,
        "render_workers": args.render_workers,
        "public_url": args.public_url,
    }
    if "poll_rate" in vars(args):
        options["poll_rate_per_second"] = args.poll_rate or None
    return options


def serve_until_stopped(build: Callable[[], Simulator[Any]], log_level: str) -> int:
    """Configure logging, start the simulator `build` returns, serve until SIGINT or SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO, including webhook tokens and presigned queries.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    stop_requested = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stop_requested.set())
    simulator = build()
    with simulator:
        print(f"{simulator.TITLE} simulator listening on {simulator.url} (Ctrl-C stops)", flush=True)
        stop_requested.wait()
    return 0
