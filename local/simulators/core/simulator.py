"""`Simulator`: the task store and its lifecycle, the control API, one worker per task, video
serving and the HTTP server, around a route's wire format (`WireFormat`)."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Self, TypedDict
from urllib.parse import urlsplit, urlunsplit

import httpx

from local.render import render_video_file
from local.service import BackgroundService
from local.simulators.core.chaos import (
    CREATE_ERRORS,
    DRIP,
    HANG,
    NO_FAULTS,
    RESET,
    STATUS_ERRORS,
    TRUNCATE,
    VIDEO_FAULTS,
    FaultDraws,
    FaultLog,
    FaultRates,
    WireFault,
    upload_key,
)
from local.simulators.core.control import CONTROL_PREFIX, control_reply
from local.simulators.core.faults import Faults, RateWindow
from local.simulators.core.http import HTTP_TIMEOUT_SECONDS, HttpRequest, HttpServer, Reply, parse_json
from local.simulators.core.images import fetch_image
from local.simulators.core.tasks import (
    TERMINAL_STATES,
    R,
    SimTask,
    State,
    TaskAbandoned,
    TaskFailed,
    pause,
)
from local.simulators.core.webhooks import Webhook, WebhookSender
from local.simulators.core.wire import WireFormat

STOP_JOIN_SECONDS = 15.0

_VIDEO_PATH = re.compile(r"^/videos/([A-Za-z0-9-]+)\.mp4$")


class SimulatorOptions(TypedDict, total=False):
    """The `Simulator` options a route's constructor passes on as they are (`**options`)."""

    render_max_long_side: int | None
    progress_delay: float
    render_workers: int
    public_url: str | None
    fault_rates: FaultRates | None
    fault_seed: int
    fault_log: Path | None


class Simulator(WireFormat[R], BackgroundService):
    """An HTTP server on a background thread plus one worker thread per task.

    Use it as a context manager, or call `start()` and `stop()`. `url` is its base URL
    (set `public_url` when clients reach it through another address, e.g. from a container).
    Subclasses set the class attributes and implement the hooks of `WireFormat`.
    """

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
        fault_rates: FaultRates | None = None,
        fault_seed: int = 0,
        fault_log: Path | None = None,
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
        self._workers: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._webhooks = WebhookSender(self.webhook_headers, self._stopping, self.logger)
        # Seeded per-request faults (core/chaos.py); none unless fault_rates are given.
        self._draws = FaultDraws(
            fault_rates or NO_FAULTS, seed=fault_seed, route=self.ROUTE, log=FaultLog(fault_log)
        )

        self._server: HttpServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._video_dir: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._video_dir = tempfile.TemporaryDirectory(prefix=f"{self.ROUTE}-sim-")
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
        self._webhooks.open()
        self._server = HttpServer((self._host, self._port), self)
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
        self._webhooks.close()
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
            counters = {name: self._counters[name] for name in ("create_requests", "tasks_created")}
            return {
                "counters": {**counters, **self._webhooks.counters()},
                "tasks_by_status": {self.STATUS_NAMES[state]: by_state[state] for state in State},
                "faults": asdict(self._faults),
                "create_requests": [dict(record) for record in self._create_requests],
                "tasks": [self._task_summary(task) for task in self._tasks.values()],
                "webhooks": self._webhooks.records(),
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
            drawn = self._draws.first(CREATE_ERRORS, upload=upload_key(body))
            if drawn is not None and drawn != "create_timeout":
                return self._drawn_error(drawn, record)
            parsed = self.parse_request(body, request)
            if isinstance(parsed, Reply):
                record["response_status"] = parsed.status
                return parsed
            task = self._new_task(model, parsed)
            # Taken before the worker starts: the answer says CREATED however fast the task runs.
            created = self.created_reply(task)
            record["response_status"], record["task_id"] = created.status, task.task_id
            if drawn == "create_timeout":  # made, and the answer never comes
                record["response_status"] = None
                created = replace(created, wire_fault=WireFault(HANG, seconds=self._draws.rates.hang_seconds))
        self._start_worker(task)
        self.logger.info(
            "task %s %s (%s, %d s)",
            task.task_id,
            self.STATUS_NAMES[State.CREATED],  # not the task's own: it may have moved on
            parsed.resolution,
            parsed.duration,
        )
        return created

    def _drawn_error(self, kind: str, record: dict[str, Any]) -> Reply:
        """The answer of a drawn create or status fault (no task is made)."""
        if kind.endswith("_reset"):
            return replace(self.error_reply(503), wire_fault=WireFault(RESET))
        if kind.endswith("_timeout"):
            return replace(
                self.error_reply(503), wire_fault=WireFault(HANG, seconds=self._draws.rates.hang_seconds)
            )
        status = int(kind.rsplit("_", 1)[1])
        record["response_status"] = status
        return self.error_reply(status, retry_after=self._draws.rates.retry_after if status == 429 else None)

    def refused_status_read(self) -> Reply | None:
        """The answer to a status, poll or result read that does not get through: the next
        injected `status_errors` status (429 with the `retry_after` fault), else a drawn
        status fault, else the route's 429 past `poll_rate_per_second` reads in the last
        second. None: answer the read."""
        with self._lock:
            if self._faults.status_errors:
                status = self._faults.status_errors.pop(0)
                retry_after = self._faults.retry_after if status == 429 else None
                return self.error_reply(status, retry_after=retry_after)
        drawn = self._draws.first(STATUS_ERRORS)
        if drawn is not None:
            return self._drawn_error(drawn, {})
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
        if request.webhook_url is not None:
            upload = upload_key(asdict(request))
            task.drop_webhooks |= self._draws.hit("webhook_drop", task=task_id, upload=upload)
            task.reorder_webhooks = self._draws.drew("webhook_reorder")
            task.unknown_task_webhook = self._draws.drew("webhook_unknown_task")
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
        if request.path.startswith(CONTROL_PREFIX):
            return control_reply(self, request)
        if match := _VIDEO_PATH.match(request.path):
            if request.method not in ("GET", "HEAD"):
                return self.error_reply(405)
            return self._video(match.group(1), request.method)
        reply = self.route(request)
        return reply if reply is not None else self.error_reply(404)

    def _video(self, task_id: str, method: str) -> Reply:
        with self._lock:
            task = self._tasks.get(task_id)
            ready = task is not None and task.state is State.COMPLETED
        video = self._video_path(task_id)
        if not ready or not video.is_file():
            return self.error_reply(404)
        reply = Reply(200, content_type="video/mp4", file=video)
        drawn = self._draws.first(VIDEO_FAULTS, task=task_id) if method == "GET" else None
        if drawn is None:
            return reply
        rates, size = self._draws.rates, video.stat().st_size
        if drawn == "video_wrong_type":
            return Reply(200, b"<html><body>Service busy</body></html>", "text/html; charset=utf-8")
        faults = {
            "video_truncated": WireFault(TRUNCATE, cut_at=size // 2),
            "video_slow": WireFault(DRIP, seconds=rates.slow_seconds),
            # Announced larger than any video the pipeline accepts; the body is the real one.
            "video_oversized": WireFault(TRUNCATE, cut_at=size, declared_length=rates.oversized_bytes),
        }
        return replace(reply, wire_fault=faults[drawn])

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
        except TaskAbandoned:
            self.logger.info("task %s abandoned (no longer stored, or the simulator stopped)", task.task_id)
        except Exception:
            self.logger.exception("task %s: unexpected error", task.task_id)
            self._fail(task, "internal error in the simulator")
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _work_on(self, task: SimTask[R]) -> None:
        pause(self._stopping, self._progress_delay)
        if self._http is None:
            raise TaskAbandoned
        image = fetch_image(self._http, task.request.image_url, self.IMAGE_MAX_BYTES)
        self.check_image(image)
        self._advance(task, State.IN_PROGRESS)
        pause(self._stopping, self._progress_delay)
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
        with contextlib.suppress(TaskAbandoned):
            self._advance(task, State.FAILED, failure_reason=reason)

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
        webhook = Webhook.of(task.task_id, status, webhook_url, payload)
        held_back = task.reorder_webhooks and not task.drop_webhooks and task.held_webhook is None
        if held_back and state not in TERMINAL_STATES:  # sent after the completion's, below
            task.held_webhook = webhook
            self._draws.note("webhook_reorder", task=task.task_id, status=status)
            return
        self._send_webhook(task, webhook, faults)
        if state in TERMINAL_STATES:
            held, task.held_webhook = task.held_webhook, None
            if held is not None:
                self._send_webhook(task, held, faults)
            if task.unknown_task_webhook and not task.drop_webhooks:
                self._draws.note("webhook_unknown_task", task=task.task_id)
                self._send_webhook(task, replace(webhook, url=_for_unknown_task(webhook_url)), faults)

    def _send_webhook(self, task: SimTask[R], webhook: Webhook, faults: Faults) -> None:
        """One webhook with the drawn faults: three copies, or late (from its own thread,
        so that the task moves on meanwhile)."""
        if task.drop_webhooks:
            self._webhooks.send(webhook, faults, drop=True, still_wanted=lambda: None)
            return
        context = {"task": task.task_id, "status": webhook.status}
        copies = 3 if self._draws.hit("webhook_triplicate", **context) else None
        if not self._draws.hit("webhook_late", **context):
            self._webhooks.send(
                webhook, faults, drop=False, still_wanted=lambda: self._check_stored(task), copies=copies
            )
            return

        def late() -> None:
            with contextlib.suppress(TaskAbandoned):
                self._webhooks.send(
                    webhook,
                    faults,
                    drop=False,
                    still_wanted=lambda: self._check_stored(task),
                    copies=copies,
                    delay=self._draws.rates.late_seconds,
                )
            with self._lock:
                self._workers.discard(threading.current_thread())

        sender = threading.Thread(target=late, name=f"late-webhook-{task.task_id[:8]}", daemon=True)
        with self._lock:
            self._workers.add(sender)
        sender.start()

    def _check_stored(self, task: SimTask[R]) -> None:
        """Raise TaskAbandoned once the task was forgotten (or reset) or the simulator stops."""
        with self._lock:
            if self._stopping.is_set() or self._tasks.get(task.task_id) is not task:
                raise TaskAbandoned


def _for_unknown_task(webhook_url: str) -> str:
    """The webhook URL with another task id in its last path segment and another token: a
    correctly signed webhook about a task the pipeline never sent."""
    parts = urlsplit(webhook_url)
    path = parts.path.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    return urlunsplit((parts.scheme, parts.netloc, path, "token=" + uuid.uuid4().hex, ""))
