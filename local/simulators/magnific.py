"""A Magnific-compatible HappyHorse image-to-video simulator on loopback.

It speaks the Magnific wire format as the provider documents it: create, status and list
endpoints behind the API-key header, the provider's error bodies, and Standard Webhooks
signed status changes. Everything else (tasks, faults, workers, rendering, video serving,
webhook delivery, the control API and the command line) is the simulators' core,
local/simulators/core/; the image rules and the webhook key decoding are the product's.

Run it on its own: `python -m local.simulators.magnific --help` (see docs/simulator.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Unpack

from standardwebhooks import Webhook

from i2v.errors import InvalidImage
from i2v.media.image import inspect_image
from i2v.providers.magnific import MagnificSettings
from i2v.providers.signatures import webhook_key
from local.simulators import core
from local.simulators.core import HttpRequest, Reply, SimTask, State, TaskFailed, is_int, json_reply

MODELS = ("happy-horse-1", "happy-horse-1-1")
API_KEY_HEADERS = ("x-magnific-api-key", "x-freepik-api-key")
STATUS_NAMES: Mapping[State, str] = {state: state.value for state in State}
STATUSES = tuple(STATUS_NAMES.values())
TERMINAL_STATUSES = frozenset({STATUS_NAMES[State.COMPLETED], STATUS_NAMES[State.FAILED]})

# The provider's published request rules: the product's own for this route.
RULES = MagnificSettings()
PROMPT_MAX_CHARS = RULES.prompt_max_chars
RESOLUTIONS = RULES.resolutions
DURATION_MIN, DURATION_MAX = RULES.duration_min, RULES.duration_max
SEED_MAX = 2_147_483_647
IMAGE_MAX_BYTES = RULES.image_max_bytes

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
ERROR_STATUSES = frozenset({401, 429, 500, 503})  # injectable on create calls and status reads
VALIDATION_MESSAGE = "Your request parameters didn't validate."

_TASKS_PATH = re.compile(r"^/v1/ai/image-to-video/(happy-horse-1(?:-1)?)(?:/([^/]+))?/?$")

__all__ = [
    "API_KEY_HEADERS",
    "MODELS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "CreateRequest",
    "Faults",
    "MagnificSimulator",
    "Reply",
    "SimTask",
    "TaskFailed",
    "check_image",
    "main",
    "sniff_image_format",
    "validate_create_body",
    "webhook_signer",
]


@dataclass(frozen=True)
class CreateRequest(core.ImageToVideoRequest):
    """A create call's body once it passed validation, with the provider's defaults applied."""

    webhook_url: str | None = None


@dataclass
class Faults(core.Faults):
    """Faults to inject; counts apply to the next N create calls, status reads or tasks."""

    ERROR_STATUSES: ClassVar[frozenset[int]] = ERROR_STATUSES


def webhook_signer(secret: str) -> Webhook:
    """The signer for a dashboard secret, with the product's key decoding (`webhook_key`):
    a `whsec_` secret is base64-decoded after the prefix (Standard Webhooks), any other
    secret is used as raw UTF-8 bytes (the provider's examples disagree)."""
    if not secret:
        raise ValueError("the webhook secret must not be empty")
    return Webhook(webhook_key(secret))


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
    return None if core.is_http_url(value) else "must be an absolute http(s) URI"


def _prompt_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > PROMPT_MAX_CHARS:
        return f"must be at most {PROMPT_MAX_CHARS} characters"
    return None


def _resolution_problem(value: object) -> str | None:
    return None if value in RESOLUTIONS else f"must be one of {', '.join(RESOLUTIONS)}"


def _duration_problem(value: object) -> str | None:
    if is_int(value) and DURATION_MIN <= value <= DURATION_MAX:
        return None
    return f"must be an integer between {DURATION_MIN} and {DURATION_MAX}"


def _seed_problem(value: object) -> str | None:
    if is_int(value) and 0 <= value <= SEED_MAX:
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
    """Apply the provider's image rules; return (format, width, height) or raise TaskFailed.

    The rules are the product's (i2v.media.image); the reasons are the simulator's own.
    """
    core.check_size(len(data), IMAGE_MAX_BYTES)
    try:
        info = inspect_image(data)
    except InvalidImage as exc:
        if exc.code in ("UNSUPPORTED_FORMAT", "EMPTY_IMAGE"):
            raise TaskFailed("image format is not supported (JPEG, PNG, BMP or WEBP expected)") from exc
        raise TaskFailed("image cannot be decoded") from exc
    core.check_decodes(data)
    width, height = info.width, info.height
    try:
        RULES.check_image(info.format, width, height, len(data))
    except InvalidImage as exc:
        if exc.code == "IMAGE_TOO_SMALL":
            raise TaskFailed(
                f"image is {width}x{height}: each side must be >= {RULES.image_min_side_px} px"
            ) from exc
        if exc.code == "BAD_ASPECT_RATIO":
            raise TaskFailed(
                f"image is {width}x{height}: aspect ratio must be between 1:2.5 and 2.5:1"
            ) from exc
        raise TaskFailed(str(exc)) from exc
    return info.format.upper(), width, height


def sniff_image_format(data: bytes) -> str | None:
    """The image format (JPEG, PNG, BMP or WEBP) the product reads from the file's head, or None."""
    try:
        return inspect_image(data).format.upper()
    except InvalidImage:
        return None


class MagnificSimulator(core.Simulator[CreateRequest]):
    """The Magnific route's simulator (see `core.Simulator` for the shared behaviour)."""

    ROUTE = "magnific"
    TITLE = "Magnific"
    STATUS_NAMES = STATUS_NAMES
    IMAGE_MAX_BYTES = IMAGE_MAX_BYTES
    FAULTS = Faults

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        webhook_secret: str,
        **options: Unpack[core.SimulatorOptions],
    ) -> None:
        self._api_key = core.ApiKey(api_key)
        super().__init__(host, port, **options)
        self._signer = webhook_signer(webhook_secret)

    # -- routes ---------------------------------------------------------------------------

    def route(self, request: HttpRequest) -> Reply | None:
        match = _TASKS_PATH.match(request.path)
        if match is None:
            return None
        model, task_id = match.groups()
        if not self._authorized(request.headers):
            return self.error_reply(401)
        if task_id is not None:
            return self._status(model, task_id) if request.method == "GET" else self.error_reply(405)
        if request.method == "POST":
            return self.submit(request, model)
        return self._list(model) if request.method == "GET" else self.error_reply(405)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return any(self._api_key.matches(headers.get(name, "")) for name in API_KEY_HEADERS)

    def _status(self, model: str, task_id: str) -> Reply:
        if (refused := self.refused_status_read()) is not None:
            return refused
        with self.locked():
            task = self.find_task(task_id)
            if task is None or task.model != model:
                return self.error_reply(404)
            return json_reply(200, {"data": self.task_body(task)})

    def _list(self, model: str) -> Reply:
        # Newest first; the provider's order and pagination are unknown.
        with self.locked():
            data = [{"task_id": task.task_id, "status": self.status_name(task)} for task in self.tasks(model)]
        return json_reply(200, {"data": data})

    # -- wire hooks -----------------------------------------------------------------------

    def parse_request(self, body: object, request: HttpRequest) -> CreateRequest | Reply:
        parsed, problems = validate_create_body(body)
        if parsed is None:
            return json_reply(
                400,
                {"message": VALIDATION_MESSAGE, "invalid_params": problems},
                content_type="application/problem+json",
            )
        return parsed

    def created_reply(self, task: SimTask[CreateRequest]) -> Reply:
        return json_reply(200, {"data": self.task_body(task)})

    def task_body(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        """The task object as the provider sends it (status `data` and webhook body)."""
        generated = [task.video_url] if task.video_url else []
        return {"task_id": task.task_id, "status": self.status_name(task), "generated": generated}

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        return json_reply(status, ERROR_BODIES[status], headers=core.retry_after_header(retry_after))

    def check_image(self, data: bytes) -> None:
        check_image(data)

    def webhook_body(self, task: SimTask[CreateRequest]) -> Mapping[str, Any] | None:
        # Every status change after CREATED is sent, with the task object as its body.
        return self.task_body(task)

    def webhook_headers(self, webhook_id: str, body: str) -> dict[str, str]:
        timestamp = datetime.now(tz=UTC).replace(microsecond=0)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, timestamp, body),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = core.cli_parser(
        "magnific",
        "Magnific-compatible HappyHorse image-to-video simulator (loopback).",
        default_port=8090,
    )
    core.env_option(parser, "--api-key", env="MAGNIFIC_SIM_API_KEY", help="API key clients must send")
    core.env_option(
        parser,
        "--webhook-secret",
        env="MAGNIFIC_SIM_WEBHOOK_SECRET",
        help="webhook signing secret, whsec_<base64> or raw text",
    )
    args = parser.parse_args(argv)
    if not args.api_key or not args.webhook_secret:
        parser.error("--api-key and --webhook-secret are required (or their env variables)")
    return core.serve_until_stopped(
        lambda: MagnificSimulator(
            api_key=args.api_key, webhook_secret=args.webhook_secret, **core.common_options(args)
        ),
        args.log_level,
    )


if __name__ == "__main__":
    raise SystemExit(main())
