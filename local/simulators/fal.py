"""A fal.ai-compatible HappyHorse image-to-video simulator on loopback.

It speaks fal's queue as the docs and fal-client use it: submit `POST /{model_id}` (with
`?fal_webhook=<url>`) behind `Authorization: Key <key>`, answered with `request_id`,
`gateway_request_id` and the status, response and cancel URLs; `GET .../requests/{id}/status`
(202 while IN_QUEUE or IN_PROGRESS, 200 once COMPLETED, `?logs=1` for logs), the result at
`GET .../requests/{id}`, `PUT .../requests/{id}/cancel`, 422 validation errors as FastAPI
`detail` lists, and one webhook per finished request (`status` OK or ERROR), signed with
the simulator's own Ed25519 key, whose JWKS it serves at `/.well-known/jwks.json`. Given an
`ssl.SSLContext` it serves HTTPS (fal-client only speaks https). Everything else (tasks,
faults, workers, rendering, videos, webhook delivery, the control API, the command line)
is the core, local/simulators/core/; the input rules are the adapter's (FalSettings).

Run it on its own: `python -m local.simulators.fal --help` (see docs/simulator.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from i2v.errors import InvalidImage
from i2v.media.image import inspect_image
from i2v.providers.fal import FalSettings
from local.simulators import core
from local.simulators.core import HttpRequest, Reply, SimTask, State, TaskFailed, is_int, json_reply

SETTINGS = FalSettings()
MODELS = tuple(model for version in SETTINGS.model_versions if (model := SETTINGS.model_id(version)))
JWKS_PATH = "/.well-known/jwks.json"
# The simulator's tally names; on the wire a failed request is COMPLETED with an error.
STATUS_NAMES: Mapping[State, str] = {
    State.CREATED: "IN_QUEUE",
    State.IN_PROGRESS: "IN_PROGRESS",
    State.COMPLETED: "COMPLETED",
    State.FAILED: "FAILED",
}
WIRE_STATUS = {**STATUS_NAMES, State.FAILED: "COMPLETED"}
RESOLUTIONS = {r.lower(): r for r in SETTINGS.resolutions}  # "720p" on the wire
SEED_MAX = 2_147_483_647
WEBHOOK_RETRIES = 10  # fal: 10 retries over 2 hours (here on the core's short backoff)
CANCELLED = "Request was cancelled"  # the simulator's wording

# `{"detail": ...}` is how fal's errors read; the texts are the simulator's own.
ERROR_DETAILS: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized: invalid or missing key",
    403: "Forbidden",
    404: "Request not found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
ERROR_STATUSES = frozenset({401, 403, 429, 500, 502, 503, 504})  # injectable on submit and reads

_REQUESTS_PATH = re.compile(r"^/([^/]+/[^/]+)/requests/([^/]+)(/status|/cancel)?/?$")

__all__ = ["MODELS", "CreateRequest", "FalSimulator", "Faults", "jwk", "main", "validate_create_body"]


@dataclass(frozen=True)
class CreateRequest(core.ImageToVideoRequest):
    """A submit once it passed validation, with fal's documented defaults applied."""

    enable_safety_checker: bool = True
    webhook_url: str | None = None


@dataclass
class Faults(core.Faults):
    """Faults to inject; counts apply to the next N submits, status or result reads, or
    tasks. Webhooks are retried like fal's, 10 times by default."""

    ERROR_STATUSES: ClassVar[frozenset[int]] = ERROR_STATUSES

    webhook_retries: int = WEBHOOK_RETRIES


def _image_url_problem(value: object) -> tuple[str, str] | None:
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
        return None
    return "Input should be a valid URL", "url_parsing"


def _prompt_problem(value: object) -> tuple[str, str] | None:
    if isinstance(value, str) and len(value) <= SETTINGS.prompt_max_chars:
        return None
    return f"String should have at most {SETTINGS.prompt_max_chars} characters", "string_too_long"


def _resolution_problem(value: object) -> tuple[str, str] | None:
    if value in RESOLUTIONS:
        return None
    return "Input should be " + " or ".join(f"'{r}'" for r in RESOLUTIONS), "enum"


def _duration(value: object) -> object:
    # Listed as the numbers 3..15; a numeric string is taken too, as pydantic would.
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _duration_problem(value: object) -> tuple[str, str] | None:
    duration = _duration(value)
    if is_int(duration) and SETTINGS.duration_min <= duration <= SETTINGS.duration_max:
        return None
    return f"Input should be an integer from {SETTINGS.duration_min} to {SETTINGS.duration_max}", "enum"


def _seed_problem(value: object) -> tuple[str, str] | None:
    if value is None or (is_int(value) and 0 <= value <= SEED_MAX):
        return None
    return f"Input should be an integer from 0 to {SEED_MAX}", "int_type"


def _bool_problem(value: object) -> tuple[str, str] | None:
    return None if isinstance(value, bool) else ("Input should be a valid boolean", "bool_type")


_FIELD_CHECKS = {
    "image_url": _image_url_problem,
    "prompt": _prompt_problem,
    "resolution": _resolution_problem,
    "duration": _duration_problem,
    "seed": _seed_problem,
    "enable_safety_checker": _bool_problem,
}


def validate_create_body(body: object, webhook_url: str | None) -> CreateRequest | list[dict[str, Any]]:
    """The request, or FastAPI-style problems (`[{loc, msg, type}]`) for a 422. Fields fal
    does not know are ignored."""
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
    problems = [
        {"loc": ["body", name], "msg": problem[0], "type": problem[1]}
        for name, check in _FIELD_CHECKS.items()
        if name in body and (problem := check(body[name])) is not None
    ]
    if "image_url" not in body:
        problems.insert(0, {"loc": ["body", "image_url"], "msg": "Field required", "type": "missing"})
    if problems:
        return problems
    return CreateRequest(
        image_url=body["image_url"],
        prompt=body.get("prompt", ""),
        resolution=RESOLUTIONS[body.get("resolution", "1080p")],  # type: ignore[arg-type]
        duration=int(_duration(body.get("duration", 5))),  # type: ignore[call-overload]
        seed=body.get("seed"),
        enable_safety_checker=body.get("enable_safety_checker", True),
        webhook_url=webhook_url,
    )


def jwk(public_key: bytes, *, padded: bool = False) -> dict[str, str]:
    """An OKP/Ed25519 JWK; `padded` keeps base64's `=` on `x`, as some of fal's copies show."""
    x = base64.urlsafe_b64encode(public_key).decode()
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
        "kid": hashlib.sha256(public_key).hexdigest()[:16],
        "x": x if padded else x.rstrip("="),
    }


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class FalSimulator(core.Simulator[CreateRequest]):
    """The fal.ai route's simulator (see `core.Simulator` for the shared behaviour)."""

    ROUTE = "fal"
    TITLE = "fal.ai"
    STATUS_NAMES = STATUS_NAMES
    IMAGE_MAX_BYTES = SETTINGS.image_max_bytes
    FAULTS = Faults

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        user_id: str = "sim-user",
        ssl_context: ssl.SSLContext | None = None,
        jwks_padded: bool = False,
        **options: Unpack[core.SimulatorOptions],
    ) -> None:
        self._api_key = core.ApiKey(api_key)
        super().__init__(host, port, **options)
        self._user_id = user_id
        self._ssl_context = ssl_context
        self._jwks_padded = jwks_padded
        self._signing_key = Ed25519PrivateKey.generate()
        self._published = [_public_bytes(self._signing_key)]
        self._cancelled: set[str] = set()
        self.jwks_requests = 0

    # -- keys -----------------------------------------------------------------------------

    def rotate_key(self, *, keep_previous: bool = True) -> None:
        """Sign with a new key from now on; the JWKS lists it (and the old one if kept)."""
        with self.locked():
            self._signing_key = Ed25519PrivateKey.generate()
            new = _public_bytes(self._signing_key)
            self._published = [*self._published, new] if keep_previous else [new]

    def jwks(self) -> dict[str, Any]:
        with self.locked():
            return {"keys": [jwk(key, padded=self._jwks_padded) for key in self._published]}

    def sign(self, request_id: str, body: bytes, timestamp: int) -> str:
        """The hex signature fal sends for `body` (the message its docs define)."""
        message = f"{request_id}\n{self._user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
        with self.locked():
            return self._signing_key.sign(message.encode()).hex()

    # -- lifecycle ------------------------------------------------------------------------

    def listening_socket(self, sock: socket.socket) -> socket.socket:
        if self._ssl_context is None:
            return sock
        return self._ssl_context.wrap_socket(sock, server_side=True)

    def pipeline_settings(self) -> dict[str, str]:
        return {**super().pipeline_settings(), "JWKS_URL": self.url + JWKS_PATH}

    @property
    def url(self) -> str:
        if self._ssl_context is None or self._public_url:
            return super().url
        return super().url.replace("http://", "https://", 1)

    # -- routes ---------------------------------------------------------------------------

    def route(self, request: HttpRequest) -> Reply | None:
        if request.path == JWKS_PATH:
            return self._jwks_reply() if request.method == "GET" else self.error_reply(405)
        model = request.path.strip("/")
        match = _REQUESTS_PATH.match(request.path)
        if model not in MODELS and (match is None or not self._owns(match.group(1))):
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if not (scheme == "Key" and self._api_key.matches(key)):
            return self.error_reply(401)
        if match is None:
            return self.submit(request, model) if request.method == "POST" else self.error_reply(405)
        return self._request_route(request, match.group(2), match.group(3))

    def _request_route(self, request: HttpRequest, request_id: str, action: str | None) -> Reply:
        if action == "/cancel":
            return self._cancel(request_id) if request.method == "PUT" else self.error_reply(405)
        if request.method != "GET":
            return self.error_reply(405)
        if (refused := self.refused_status_read()) is not None:
            return refused
        if action == "/status":
            return self._status(request_id, logs=request.param("logs") in ("1", "true"))
        return self._result(request_id)

    @staticmethod
    def _owns(owner_app: str) -> bool:
        return any(model.startswith(owner_app + "/") for model in MODELS)

    def _jwks_reply(self) -> Reply:
        with self.locked():
            self.jwks_requests += 1
        return json_reply(200, self.jwks())

    def _status(self, request_id: str, *, logs: bool) -> Reply:
        with self.locked():
            task = self.find_task(request_id)
            if task is None:
                return self.error_reply(404)
            body = self._request_body(task)
            body["logs"] = self._logs(task) if logs else None
            if task.state is State.CREATED:
                body["queue_position"] = self._queue_position(task)
            if task.state in core.TERMINAL_STATES:
                started = task.times.get(State.IN_PROGRESS, task.created_at)
                body["metrics"] = {"inference_time": round(task.times.get(task.state, started) - started, 3)}
            if task.state is State.FAILED:
                body["error"], body["error_type"] = self._failure(task)[1:]
        return json_reply(200 if body["status"] == "COMPLETED" else 202, body)

    def _result(self, request_id: str) -> Reply:
        with self.locked():
            task = self.find_task(request_id)
            if task is None:
                return self.error_reply(404)
            if task.state is State.COMPLETED:
                return json_reply(200, self._output(task))
            if task.state is State.FAILED:
                status, _, _ = self._failure(task)
                return json_reply(status, self._error_payload(task))
        return json_reply(400, {"detail": "Request is still in progress"})

    def _cancel(self, request_id: str) -> Reply:
        with self.locked():
            task = self.find_task(request_id)
            if task is None:
                return json_reply(404, {"status": "NOT_FOUND"})
            if task.state in core.TERMINAL_STATES:
                return json_reply(400, {"status": "ALREADY_COMPLETED"})
            # A stored copy ends the task: its worker finds itself replaced and stops.
            self._cancelled.add(request_id)
            times = {**task.times, State.FAILED: time.time()}
            self._tasks[request_id] = replace(task, state=State.FAILED, failure_reason=CANCELLED, times=times)
            self.locked().notify_all()
        self.logger.info("task %s cancelled", request_id)
        # Whether fal posts a webhook for a cancelled request is unknown: none is sent.
        return json_reply(202, {"status": "CANCELLATION_REQUESTED"})

    # -- bodies ---------------------------------------------------------------------------

    def _request_urls(self, task: SimTask[CreateRequest]) -> dict[str, str]:
        owner_app = "/".join(task.model.split("/")[:2])
        base = f"{self.url}/{owner_app}/requests/{task.task_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _request_body(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        return {"status": WIRE_STATUS[task.state], "request_id": task.task_id, **self._request_urls(task)}

    def _queue_position(self, task: SimTask[CreateRequest]) -> int:
        """Requests queued ahead of `task` (the caller holds the lock)."""
        return sum(1 for t in self.tasks() if t.state is State.CREATED and t.created_at < task.created_at)

    def _logs(self, task: SimTask[CreateRequest]) -> list[dict[str, str]]:
        said = {State.IN_PROGRESS: "Generating video", State.COMPLETED: "Video ready"}
        return [
            {
                "message": said[state],
                "level": "INFO",
                "source": "user",
                "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
            }
            for state, at in task.times.items()
            if state in said
        ]

    def _output(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        """HappyHorse's output on fal: `{video: File, seed}`."""
        return {
            "video": {
                "url": task.video_url,
                "content_type": "video/mp4",
                "file_name": f"{task.task_id}.mp4",
            },
            "seed": task.request.seed if task.request.seed is not None else 42,
        }

    def _failure(self, task: SimTask[CreateRequest]) -> tuple[int, str, str]:
        """(HTTP status of the result, `error`, `error_type`) of a failed request."""
        reason = task.failure_reason or "failed"
        if task.task_id in self._cancelled:
            return 400, CANCELLED, "request_cancelled"
        if task.forced_failure:
            return 500, reason, "internal_error"
        return 422, reason, "image_load_error"  # the worker fails on the image only

    def _error_payload(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        status, reason, kind = self._failure(task)
        if status == 422:
            return {"detail": [{"loc": ["body", "image_url"], "msg": reason, "type": kind}]}
        return {"detail": reason}

    # -- wire hooks -----------------------------------------------------------------------

    def parse_request(self, body: object, request: HttpRequest) -> CreateRequest | Reply:
        parsed = validate_create_body(body, request.param("fal_webhook"))
        if isinstance(parsed, list):
            return json_reply(422, {"detail": parsed})
        return parsed

    def created_reply(self, task: SimTask[CreateRequest]) -> Reply:
        body = self._request_body(task)
        queued = {"gateway_request_id": task.task_id, "queue_position": self._queue_position(task)}
        return json_reply(200, {**body, **queued})

    def task_body(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        return {"request_id": task.task_id, "status": WIRE_STATUS[task.state], "video_url": task.video_url}

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        return json_reply(
            status, {"detail": ERROR_DETAILS[status]}, headers=core.retry_after_header(retry_after)
        )

    def check_image(self, data: bytes) -> None:
        try:
            info = inspect_image(data)
            SETTINGS.check_image(info.format, info.width, info.height, len(data))
        except InvalidImage as exc:
            raise TaskFailed(exc.message) from exc

    def webhook_body(self, task: SimTask[CreateRequest]) -> Mapping[str, Any] | None:
        if task.state is State.COMPLETED:
            payload: dict[str, Any] = {"status": "OK", "payload": self._output(task)}
        elif task.state is State.FAILED:
            status = self._failure(task)[0]
            error = f"Invalid status code: {status}"
            payload = {"status": "ERROR", "error": error, "payload": self._error_payload(task)}
        else:
            return None  # fal posts once, when the request is done
        return {"request_id": task.task_id, "gateway_request_id": task.task_id, **payload}

    def webhook_headers(self, webhook_id: str, body: str) -> dict[str, str]:
        request_id = str(json.loads(body)["request_id"])
        timestamp = int(time.time())
        return {
            "content-type": "application/json",
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": self._user_id,
            "x-fal-webhook-timestamp": str(timestamp),
            "x-fal-webhook-signature": self.sign(request_id, body.encode(), timestamp),
        }

    def reset(self) -> None:
        with self.locked():
            super().reset()
            self._cancelled.clear()
            self.jwks_requests = 0

    def forget(self, task_id: str) -> bool:
        with self.locked():
            self._cancelled.discard(task_id)
        return super().forget(task_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = core.cli_parser(
        "fal", "fal.ai-compatible HappyHorse image-to-video simulator (loopback).", default_port=8094
    )
    core.env_option(
        parser, "--api-key", env="FAL_SIM_API_KEY", help="key clients must send as `Authorization: Key <key>`"
    )
    parser.add_argument("--user-id", default="sim-user", help="X-Fal-Webhook-User-Id (default: %(default)s)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate (chain) to serve HTTPS with")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key is required (or env FAL_SIM_API_KEY)")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return core.serve_until_stopped(
        lambda: FalSimulator(
            api_key=args.api_key, user_id=args.user_id, ssl_context=context, **core.common_options(args)
        ),
        args.log_level,
    )


if __name__ == "__main__":
    raise SystemExit(main())
