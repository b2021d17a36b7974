"""A Magnific-compatible HappyHorse image-to-video simulator on loopback.

It speaks the Magnific wire format as the provider documents it: create, status and list
endpoints behind the API-key header, the provider's error bodies, and Standard Webhooks
signed status changes. Each task really fetches its image, checks it against the
provider's image rules and renders an H.264 MP4 (local/render.py) served from
`/videos/{task_id}.mp4`. Faults (error answers, lost, duplicated or late webhooks,
failing tasks) are injected over HTTP (`/_sim/...`) or with the Python methods.

Run it on its own: `python -m local.simulators.magnific --help` (see docs/simulator.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import io
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self, TypeGuard
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image
from standardwebhooks import Webhook

from local.render import render_video_file
from local.service import BackgroundService

# Named, not __name__: the same logger whether imported or run with `python -m`.
logger = logging.getLogger("local.simulators.magnific")

MODELS = ("happy-horse-1", "happy-horse-1-1")
API_KEY_HEADERS = ("x-magnific-api-key", "x-freepik-api-key")
STATUSES = ("CREATED", "IN_PROGRESS", "COMPLETED", "FAILED")
TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED"})

# The provider's published request and image rules.
PROMPT_MAX_CHARS = 2500
RESOLUTIONS = ("720P", "1080P")
DURATION_MIN, DURATION_MAX = 3, 15
SEED_MAX = 2_147_483_647
IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MIN_SIDE = 300
IMAGE_MAX_ASPECT = 2.5
IMAGE_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("JPEG", b"\xff\xd8\xff", 0),
    ("PNG", b"\x89PNG\r\n\x1a\n", 0),
    ("BMP", b"BM", 0),
    ("WEBP", b"WEBP", 8),  # after "RIFF" and the chunk size
)

# The provider's own error bodies; 405 and 413 are the simulator's (not documented).
ERROR_BODIES: dict[int, dict[str, str]] = {
    401: {"message": "Invalid API key"},
    404: {"message": "Not found"},
    405: {"message": "Method not allowed"},
    413: {"message": "Request body too large"},
    429: {"message": "Too many requests"},
    500: {"message": "Internal Server Error"},
    503: {"message": "Service Unavailable. Please try again later."},
}
SUBMIT_ERROR_STATUSES = frozenset({401, 429, 500, 503})
VALIDATION_MESSAGE = "Your request parameters didn't validate."

HTTP_TIMEOUT_SECONDS = 10.0
REQUEST_BODY_MAX_BYTES = 1024 * 1024
WEBHOOK_RETRY_MAX_DELAY_SECONDS = 10.0
STOP_JOIN_SECONDS = 15.0

_TASKS_PATH = re.compile(r"^/v1/ai/image-to-video/(happy-horse-1(?:-1)?)(?:/([^/]+))?/?$")
_VIDEO_PATH = re.compile(r"^/videos/([A-Za-z0-9-]+)\.mp4$")


@dataclass(frozen=True)
class CreateRequest:
    """A create call's body once it passed validation, with the provider's defaults applied."""

    image_url: str
    prompt: str = ""
    resolution: Literal["720P", "1080P"] = "1080P"
    duration: int = 5
    seed: int | None = None
    webhook_url: str | None = None


@dataclass
class Faults:
    """Faults to inject; counts apply to the next N create calls or tasks."""

    submit_errors: list[int] = field(default_factory=list)
    retry_after: int | None = None
    drop_webhooks: int = 0
    fail_tasks: int = 0
    duplicate_webhooks: bool = False
    webhook_delay: float = 0.0
    webhook_retries: int = 0

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with `changes` applied; ValueError names the first bad field."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        for name, value in changes.items():
            _check_fault(name, value)
        merged = replace(self, **changes)  # type: ignore[arg-type]
        merged.submit_errors = list(merged.submit_errors)
        return merged


def _check_fault(name: str, value: object) -> None:
    if name == "submit_errors":
        valid = isinstance(value, list) and all(_is_int(v) and v in SUBMIT_ERROR_STATUSES for v in value)
        expected = f"a list of statuses among {sorted(SUBMIT_ERROR_STATUSES)}"
    elif name == "retry_after":
        valid = value is None or (_is_int(value) and value >= 0)
        expected = "null or a whole number of seconds >= 0"
    elif name == "duplicate_webhooks":
        valid = isinstance(value, bool)
        expected = "true or false"
    elif name == "webhook_delay":
        valid = _is_number(value) and value >= 0
        expected = "a number of seconds >= 0"
    else:
        valid = _is_int(value) and value >= 0
        expected = "an integer >= 0"
    if not valid:
        raise ValueError(f"{name} must be {expected}")


@dataclass
class SimTask:
    task_id: str
    model: str
    request: CreateRequest
    created_at: float
    status: str = "CREATED"
    generated: list[str] = field(default_factory=list)
    failure_reason: str | None = None
    drop_webhooks: bool = False
    forced_failure: bool = False

    def wire(self) -> dict[str, Any]:
        """The task object as the provider sends it (status `data` and webhook body)."""
        return {"task_id": self.task_id, "status": self.status, "generated": list(self.generated)}


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
    """The simulator was reset or stopped while the task ran: stop quietly."""


def webhook_signer(secret: str) -> Webhook:
    """The signer for a dashboard secret.

    The provider's examples disagree on the key encoding: a `whsec_` secret is base64-decoded
    after the prefix (Standard Webhooks), any other secret is used as raw UTF-8 bytes.
    """
    if not secret:
        raise ValueError("the webhook secret must not be empty")
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def validate_create_body(body: object) -> tuple[CreateRequest | None, list[dict[str, str]]]:
    """Check a create body against the provider's table; return it or the invalid params."""
    if not isinstance(body, dict):
        return None, [{"name": "body", "reason": "must be a JSON object"}]
    problems = [
        {"name": name, "reason": reason}
        for name, check in _FIELD_CHECKS.items()
        if name in body and (reason := check(body[name])) is not None
    ]
    if "image_url" not in body:
        problems.insert(0, {"name": "image_url", "reason": "is required"})
    if problems:
        return None, problems
    return CreateRequest(
        image_url=body["image_url"],
        prompt=body.get("prompt", ""),
        resolution=body.get("resolution", "1080P"),
        duration=body.get("duration", 5),
        seed=body.get("seed"),
        webhook_url=body.get("webhook_url"),
    ), []


def _uri_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an absolute http(s) URI"
    return None


def _prompt_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > PROMPT_MAX_CHARS:
        return f"must be at most {PROMPT_MAX_CHARS} characters"
    return None


def _resolution_problem(value: object) -> str | None:
    return None if value in RESOLUTIONS else f"must be one of {', '.join(RESOLUTIONS)}"


def _duration_problem(value: object) -> str | None:
    if _is_int(value) and DURATION_MIN <= value <= DURATION_MAX:
        return None
    return f"must be an integer between {DURATION_MIN} and {DURATION_MAX}"


def _seed_problem(value: object) -> str | None:
    if _is_int(value) and 0 <= value <= SEED_MAX:
        return None
    return f"must be an integer between 0 and {SEED_MAX}"


# Optional fields must be absent rather than null: whether the provider accepts null is unknown.
_FIELD_CHECKS = {
    "image_url": _uri_problem,
    "prompt": _prompt_problem,
    "resolution": _resolution_problem,
    "duration": _duration_problem,
    "seed": _seed_problem,
    "webhook_url": _uri_problem,
}


def check_image(data: bytes) -> tuple[str, int, int]:
    """Apply the provider's image rules; return (format, width, height) or raise TaskFailed."""
    if len(data) > IMAGE_MAX_BYTES:
        raise TaskFailed(f"image is larger than {IMAGE_MAX_BYTES // (1024 * 1024)} MB")
    image_format = sniff_image_format(data)
    if image_format is None:
        raise TaskFailed("image format is not supported (JPEG, PNG, BMP or WEBP expected)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise TaskFailed("image cannot be decoded") from exc
    if min(width, height) < IMAGE_MIN_SIDE:
        raise TaskFailed(f"image is {width}x{height}: each side must be >= {IMAGE_MIN_SIDE} px")
    if max(width, height) / min(width, height) > IMAGE_MAX_ASPECT:
        raise TaskFailed(f"image is {width}x{height}: aspect ratio must be between 1:2.5 and 2.5:1")
    return image_format, width, height


def sniff_image_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes, or None."""
    for name, magic, offset in IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "WEBP" and not data.startswith(b"RIFF"):
                continue
            return name
    return None


class MagnificSimulator(BackgroundService):
    """The simulator: an HTTP server on a background thread plus one worker thread per task.

    Use it as a context manager, or call `start()` and `stop()`. `url` is its base URL
    (set `public_url` when clients reach it through another address, e.g. from a container).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        webhook_secret: str,
        render_max_long_side: int | None = None,
        progress_delay: float = 0.2,
        render_workers: int = 2,
        public_url: str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty")
        if render_max_long_side is not None and render_max_long_side < 16:
            raise ValueError("render_max_long_side must be at least 16 pixels")
        if render_workers < 1:
            raise ValueError("render_workers must be at least 1")
        self._host = host
        self._port = port
        self._api_key = api_key.encode()
        self._signer = webhook_signer(webhook_secret)
        self._render_max_long_side = render_max_long_side
        self._progress_delay = progress_delay
        self._render_slots = threading.BoundedSemaphore(render_workers)
        self._public_url = public_url.rstrip("/") if public_url else None

        self._lock = threading.Condition()
        self._tasks: dict[str, SimTask] = {}
        self._faults = Faults()
        self._counters: Counter[str] = Counter()
        self._create_requests: list[dict[str, Any]] = []
        self._webhooks: list[dict[str, Any]] = []
        self._workers: set[threading.Thread] = set()
        self._stopping = threading.Event()

        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._video_dir: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._video_dir = tempfile.TemporaryDirectory(prefix="magnific-sim-")
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
        self._server = _Server((self._host, self._port), self)
        # A short poll interval makes stop() quick: shutdown waits for the serving loop's next poll.
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="magnific-sim", daemon=True
        )
        self._serve_thread.start()
        logger.info("Magnific simulator listening on %s", self.url)
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
        logger.info("Magnific simulator stopped")

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
            self._faults = Faults()
            self._counters.clear()
            self._create_requests.clear()
            self._webhooks.clear()
            if self._video_dir is not None:
                for video in Path(self._video_dir.name).glob("*.mp4"):
                    video.unlink(missing_ok=True)
            self._lock.notify_all()

    def state(self) -> dict[str, Any]:
        """Counters, tasks by status, faults and the recorded create requests and webhooks."""
        with self._lock:
            by_status = Counter(task.status for task in self._tasks.values())
            return {
                "counters": {
                    name: self._counters[name]
                    for name in (
                        "create_requests",
                        "tasks_created",
                        "webhooks_sent",
                        "webhooks_delivered",
                        "webhooks_failed",
                        "webhooks_dropped",
                    )
                },
                "tasks_by_status": {status: by_status[status] for status in STATUSES},
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
        statuses: Collection[str] = TERMINAL_STATUSES,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Block until the task reaches one of `statuses`; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                task = self._tasks.get(task_id)
                if task is not None and task.status in statuses:
                    return self._task_summary(task)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    current = task.status if task else "unknown"
                    raise TimeoutError(f"task {task_id} still {current} after {timeout} s")
                self._lock.wait(remaining)

    @staticmethod
    def _task_summary(task: SimTask) -> dict[str, Any]:
        return {
            **task.wire(),
            "model": task.model,
            "failure_reason": task.failure_reason,
            "request": asdict(task.request),
        }

    # -- HTTP routing -----------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request. `headers` has lower-case names."""
        if path.startswith("/_sim/"):
            return self._handle_control(method, path, body)
        if match := _VIDEO_PATH.match(path):
            return self._video(match.group(1)) if method in ("GET", "HEAD") else _error(405)
        if match := _TASKS_PATH.match(path):
            model, task_id = match.groups()
            return self._handle_api(method, model, task_id, headers, body)
        return _error(404)

    def _handle_api(
        self, method: str, model: str, task_id: str | None, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        if not self._authorized(headers):
            return _error(401)
        if task_id is not None:
            return self._status(model, task_id) if method == "GET" else _error(405)
        if method == "POST":
            return self._create(model, body)
        return self._list(model) if method == "GET" else _error(405)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return any(
            hmac.compare_digest(headers.get(name, "").encode(), self._api_key) for name in API_KEY_HEADERS
        )

    def _handle_control(self, method: str, path: str, body: bytes) -> Reply:
        if (method, path) == ("POST", "/_sim/faults"):
            return self._post_faults(body)
        if (method, path) == ("POST", "/_sim/reset"):
            self.reset()
            return _json(200, self.state())
        if (method, path) == ("GET", "/_sim/faults"):
            return _json(200, {"faults": self.faults()})
        if (method, path) == ("GET", "/_sim/state"):
            return _json(200, self.state())
        return _error(404)

    def _post_faults(self, body: bytes) -> Reply:
        changes = _parse_json(body)
        if not isinstance(changes, dict):
            return _json(400, {"message": "the body must be a JSON object of faults"})
        try:
            return _json(200, {"faults": self.set_faults(**changes)})
        except ValueError as exc:
            return _json(400, {"message": str(exc)})

    def _create(self, model: str, raw_body: bytes) -> Reply:
        body = _parse_json(raw_body)
        with self._lock:
            self._counters["create_requests"] += 1
            record: dict[str, Any] = {
                "model": model,
                "body": body if body is not None else raw_body.decode(errors="replace"),
                "received_at": time.time(),
                "response_status": None,
                "task_id": None,
            }
            self._create_requests.append(record)
            if self._faults.submit_errors:
                record["response_status"] = status = self._faults.submit_errors.pop(0)
                return self._submit_error(status)
            request, problems = validate_create_body(body)
            if request is None:
                record["response_status"] = 400
                return _json(
                    400,
                    {"message": VALIDATION_MESSAGE, "invalid_params": problems},
                    content_type="application/problem+json",
                )
            task = self._new_task(model, request)
            record["response_status"], record["task_id"] = 200, task.task_id
            # Taken before the worker starts: the answer says CREATED however fast the task runs.
            created = _json(200, {"data": task.wire()})
        self._start_worker(task)
        logger.info("task %s CREATED (%s, %d s)", task.task_id, request.resolution, request.duration)
        return created

    def _submit_error(self, status: int) -> Reply:
        retry_after = self._faults.retry_after
        if status == 429 and retry_after is not None:
            return _error(status, headers=(("Retry-After", str(retry_after)),))
        return _error(status)

    def _new_task(self, model: str, request: CreateRequest) -> SimTask:
        """Create and store a task, consuming the per-task faults (caller holds the lock)."""
        task = SimTask(task_id=str(uuid.uuid4()), model=model, request=request, created_at=time.time())
        if self._faults.drop_webhooks > 0:
            self._faults.drop_webhooks -= 1
            task.drop_webhooks = True
        if self._faults.fail_tasks > 0:
            self._faults.fail_tasks -= 1
            task.forced_failure = True
        self._tasks[task.task_id] = task
        self._counters["tasks_created"] += 1
        return task

    def _status(self, model: str, task_id: str) -> Reply:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.model != model:
                return _error(404)
            return _json(200, {"data": task.wire()})

    def _list(self, model: str) -> Reply:
        # Newest first; the provider's order and pagination are unknown.
        with self._lock:
            tasks = sorted(
                (task for task in self._tasks.values() if task.model == model),
                key=lambda task: task.created_at,
                reverse=True,
            )
            data = [{"task_id": task.task_id, "status": task.status} for task in tasks]
        return _json(200, {"data": data})

    def _video(self, task_id: str) -> Reply:
        with self._lock:
            task = self._tasks.get(task_id)
            ready = task is not None and task.status == "COMPLETED"
        path = self._video_path(task_id)
        if not ready or not path.is_file():
            return _error(404)
        return Reply(200, content_type="video/mp4", file=path)

    def _video_path(self, task_id: str) -> Path:
        if self._video_dir is None:
            raise RuntimeError("the simulator is not running")
        return Path(self._video_dir.name) / f"{task_id}.mp4"

    # -- task work --------------------------------------------------------------------------

    def _start_worker(self, task: SimTask) -> None:
        worker = threading.Thread(
            target=self._run_task, args=(task,), name=f"task-{task.task_id[:8]}", daemon=True
        )
        with self._lock:
            self._workers.add(worker)
        worker.start()

    def _run_task(self, task: SimTask) -> None:
        try:
            self._work_on(task)
        except TaskFailed as failure:
            self._fail(task, str(failure))
        except _TaskAbandoned:
            logger.info("task %s abandoned (simulator reset or stopped)", task.task_id)
        except Exception:
            logger.exception("task %s: unexpected error", task.task_id)
            self._fail(task, "internal error in the simulator")
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _work_on(self, task: SimTask) -> None:
        self._pause(self._progress_delay)
        image = self._fetch_image(task.request.image_url)
        check_image(image)
        self._advance(task, "IN_PROGRESS")
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
        self._advance(task, "COMPLETED", generated=[f"{self.url}/videos/{task.task_id}.mp4"])

    def _fail(self, task: SimTask, reason: str) -> None:
        with contextlib.suppress(_TaskAbandoned):
            self._advance(task, "FAILED", failure_reason=reason)

    def _fetch_image(self, url: str) -> bytes:
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
                    if size > IMAGE_MAX_BYTES:
                        raise TaskFailed(f"image is larger than {IMAGE_MAX_BYTES // (1024 * 1024)} MB")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise TaskFailed(f"image could not be fetched: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def _advance(
        self,
        task: SimTask,
        status: str,
        *,
        generated: list[str] | None = None,
        failure_reason: str | None = None,
    ) -> None:
        """Record a status change, then send its webhook (after, so a status read agrees)."""
        with self._lock:
            if self._stopping.is_set() or self._tasks.get(task.task_id) is not task:
                raise _TaskAbandoned
            task.status = status
            task.generated = generated or []
            task.failure_reason = failure_reason
            payload = task.wire()
            faults = replace(self._faults)
            self._lock.notify_all()
        logger.info("task %s %s%s", task.task_id, status, f": {failure_reason}" if failure_reason else "")
        webhook_url = task.request.webhook_url
        if webhook_url is None:
            return
        if task.drop_webhooks:
            with self._lock:
                self._counters["webhooks_dropped"] += 1
            logger.info("webhook task=%s status=%s dropped (fault injection)", task.task_id, status)
            return
        self._pause(faults.webhook_delay)
        body = json.dumps(payload, separators=(",", ":"))
        webhook_id = f"msg_{uuid.uuid4().hex}"
        for _ in range(2 if faults.duplicate_webhooks else 1):
            self._deliver(webhook_url, webhook_id, body, payload, faults.webhook_retries)

    def _deliver(
        self, url: str, webhook_id: str, body: str, payload: Mapping[str, Any], retries: int
    ) -> None:
        """POST one signed webhook; with `retries` > 0, retry failures with a backoff.

        Every attempt keeps the webhook-id and is signed with a fresh timestamp, as Standard
        Webhooks senders do (the provider's own behaviour is unknown).
        """
        for attempt in range(1, retries + 2):
            started = time.monotonic()
            answer, retry_after = self._post_webhook(url, webhook_id, body)
            elapsed_ms = (time.monotonic() - started) * 1000
            delivered = isinstance(answer, int) and 200 <= answer < 300
            with self._lock:
                self._counters["webhooks_sent"] += 1
                self._counters["webhooks_delivered" if delivered else "webhooks_failed"] += 1
                self._webhooks.append(
                    {
                        "task_id": payload["task_id"],
                        "status": payload["status"],
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
            logger.info(
                "webhook task=%s status=%s to %s attempt %d -> %s",
                payload["task_id"],
                payload["status"],
                _without_query(url),
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
        timestamp = datetime.now(tz=UTC).replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, timestamp, body),
        }
        try:
            response = self._http.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__, None
        return response.status_code, _seconds(response.headers.get("retry-after"))

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _TaskAbandoned


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: MagnificSimulator) -> None:
        super().__init__(address, _RequestHandler)
        self.simulator = simulator


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MagnificSimulator/1.0"

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
        path = urlsplit(self.path).path
        length = int(self.headers.get("content-length") or 0)
        if length > REQUEST_BODY_MAX_BYTES:
            self.close_connection = True
            reply = _error(413)
        else:
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            assert isinstance(self.server, _Server)
            reply = self.server.simulator.handle(method, path, headers, body)
        self._send(reply, include_body=method != "HEAD")
        # One line per request: no headers (API key), no query string (presigned URLs).
        logger.info("%s %s -> %d (%.0f ms)", method, path, reply.status, (time.monotonic() - started) * 1000)

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
        logger.warning("http: " + format, *args)


def _json(
    status: int,
    payload: object,
    *,
    content_type: str = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    return Reply(status, json.dumps(payload).encode(), content_type, headers)


def _error(status: int, *, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return _json(status, ERROR_BODIES[status], headers=headers)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _without_query(url: str) -> str:
    """The URL without query and fragment: webhook tokens and signatures stay out of logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.simulators.magnific",
        description="Magnific-compatible HappyHorse image-to-video simulator (loopback).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port, 0 for any (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MAGNIFIC_SIM_API_KEY"),
        help="API key clients must send (or env MAGNIFIC_SIM_API_KEY)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("MAGNIFIC_SIM_WEBHOOK_SECRET"),
        help="webhook signing secret, whsec_<base64> or raw text (or env MAGNIFIC_SIM_WEBHOOK_SECRET)",
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
    parser.add_argument("--log-level", default="INFO", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.api_key or not args.webhook_secret:
        parser.error("--api-key and --webhook-secret are required (or their env variables)")

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request's full URL at INFO, including webhook tokens and presigned queries.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    stop_requested = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stop_requested.set())
    simulator = MagnificSimulator(
        args.host,
        args.port,
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        render_max_long_side=args.render_max_long_side,
        progress_delay=args.progress_delay,
        render_workers=args.render_workers,
        public_url=args.public_url,
    )
    with simulator:
        print(f"Magnific simulator listening on {simulator.url} (Ctrl-C stops)", flush=True)
        stop_requested.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
