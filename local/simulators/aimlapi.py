"""An AI/ML API compatible HappyHorse image-to-video simulator on loopback.

It speaks the wire format of AI/ML API's docs (../shared/PROVIDERS.md section 3, and
i2v/providers/aimlapi.py, which cites the pages): one path, `/v2/video/generations`, with
POST to create a generation (Bearer key, the JSON body of the model's OpenAPI schema,
answering `{"id", "status"}`) and GET `?generation_id=<id>` to read it (`queued`,
`generating`, `completed` with `video.url`, `error` with `error.name` and `error.message`).
Error answers have the documented body `{message, path, requestId, statusCode, timestamp}`
and the documented messages where the docs give one. A polling route: no webhooks.
Everything else (tasks, faults, workers, rendering, video serving, the control API and the
command line) is the core, local/simulators/core/.

The image may be an http(s) URL or a base64 `data:` URL, as the docs allow (the core
decodes it). What the docs leave open is a constructor option, said so where it is used:
the image rules (the product's own, from `AimlapiSettings`), the answer for an unknown or
expired id (404 here), the poll rate limit (off unless set; the core's rate window) and
how long a generation is kept.

Run it on its own: `python -m local.simulators.aimlapi --help` (see docs/simulator.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Unpack

from i2v.errors import InvalidImage
from i2v.media.image import inspect_image
from i2v.providers.aimlapi import GENERATIONS_PATH, AimlapiSettings
from local.simulators import core
from local.simulators.core import HttpRequest, Reply, SimTask, State, TaskFailed, is_int, json_reply

_DEFAULTS = AimlapiSettings()
MODELS = (_DEFAULTS.model_1_0, _DEFAULTS.model_1_1)
STATUS_NAMES: Mapping[State, str] = {
    State.CREATED: "queued",
    State.IN_PROGRESS: "generating",
    State.COMPLETED: "completed",
    State.FAILED: "error",
}
# The documented request rules (the model's OpenAPI schema).
RESOLUTIONS = ("720p", "1080p")
DURATIONS = range(3, 16)
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
AUDIO_SETTINGS = ("auto", "origin")
SEED_MAX = 2_147_483_647  # unpublished here; the upstream (Alibaba) range
# Unpublished: how long a generation can be read. After it, the id answers like an unknown one.
GENERATION_TTL_SECONDS = 24 * 3600
# The fetch stops reading past the largest limit quoted for HappyHorse images (20 MB).
FETCH_MAX_BYTES = 20 * 1024 * 1024

# Messages the docs give ("Errors and messages"); the others are the simulator's wording.
ERROR_MESSAGES: dict[int, str] = {
    400: "Body validation error!",
    401: (
        "This request requires a valid API key. You can create a new API key on the "
        "Billing page: https://aimlapi.com/app/keys"
    ),
    403: (
        "You've run out of credits. Please top up your balance or update your payment "
        "method to continue: https://aimlapi.com/app/billing/"
    ),
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request body too large",
    429: "Too Many Requests",
    500: "Internal server error",
    502: "Bad Gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}
ERROR_STATUSES = frozenset({400, 401, 403, 429, 500, 502, 503, 504})  # injectable on create and read
UNKNOWN_GENERATION = "Generation not found"  # unpublished: the answer is assumed to be a 404
# A failed generation's `error.name`: unpublished, the simulator's choice.
FAILURE_NAMES: Mapping[core.FailureCause, str] = {
    core.FailureCause.IMAGE_FETCH: "ImageFetchError",
    core.FailureCause.IMAGE: "InvalidImage",
    core.FailureCause.OTHER: "GenerationError",
}

__all__ = [
    "MODELS",
    "STATUS_NAMES",
    "AimlapiSimulator",
    "CreateRequest",
    "Faults",
    "main",
    "validate_create_body",
]


@dataclass(frozen=True)
class CreateRequest:
    """A create call once it passed validation, with the documented defaults applied (the
    prompt required, 10 s: not `core.ImageToVideoRequest`'s)."""

    image_url: str
    prompt: str
    resolution: Literal["720P", "1080P"] = "1080P"
    duration: int = 10
    seed: int | None = None
    watermark: bool = False
    aspect_ratio: str = "16:9"
    webhook_url: str | None = None  # a polling route: always None


@dataclass
class Faults(core.Faults):
    """Faults to inject; counts apply to the next N create calls, reads or tasks."""

    ERROR_STATUSES: ClassVar[frozenset[int]] = ERROR_STATUSES


def validate_create_body(body: object, *, models: Sequence[str] = MODELS) -> tuple[str, CreateRequest] | str:
    """The model and request of a create body, or what is wrong with it (for a 400)."""
    if not isinstance(body, dict):
        return "Expected object, received " + type(body).__name__
    model = body.get("model")
    if not isinstance(model, str) or model not in models:
        expected = " | ".join(f"'{m}'" for m in models)
        return f"model: Invalid enum value. Expected {expected}, received {model!r}"
    if not isinstance(body.get("prompt"), str):
        return "prompt: Required" if "prompt" not in body else "prompt: Expected string"
    problem = _image_problem(body) or _options_problem(body)
    if problem:
        return problem
    return model, CreateRequest(
        image_url=body["image_url"],
        prompt=body["prompt"],
        resolution="720P" if body.get("resolution") == "720p" else "1080P",
        duration=int(body.get("duration", 10)),
        seed=body.get("seed"),
        watermark=body.get("watermark", False),
        aspect_ratio=body.get("aspect_ratio", "16:9"),
    )


def _image_problem(body: dict[str, Any]) -> str | None:
    # The schema makes `image_url` optional (text-to-video); this simulator renders from an
    # image only: an http(s) URL or a Base64 data: URL, the two the docs name.
    url = body.get("image_url")
    if url is None:
        return "image_url: Required (the simulator renders image-to-video only)"
    if not isinstance(url, str) or not core.is_image_url(url):
        return "image_url: Invalid url (an http(s) URL or a data: URL)"
    for field in ("reference_image_urls", "video_url"):
        if field in body:
            return f"{field}: not simulated (reference and video-to-video generations)"
    return None


def _options_problem(body: dict[str, Any]) -> str | None:
    for field, allowed in (
        ("resolution", RESOLUTIONS),
        ("aspect_ratio", ASPECT_RATIOS),
        ("audio_setting", AUDIO_SETTINGS),
    ):
        if field in body and body[field] not in allowed:
            expected = " | ".join(f"'{value}'" for value in allowed)
            return f"{field}: Invalid enum value. Expected {expected}, received {body[field]!r}"
    duration = body.get("duration", 10)
    # The schema says integer; the docs' own examples send "7", so a digit string is taken.
    if isinstance(duration, str) and duration.isdigit():
        duration = int(duration)
    if not (is_int(duration) and duration in DURATIONS):
        return f"duration: Invalid enum value. Expected 3 | 4 | ... | 15, received {body.get('duration')!r}"
    seed = body.get("seed", 0)
    if not (is_int(seed) and 0 <= seed <= SEED_MAX):
        return f"seed: Expected integer between 0 and {SEED_MAX}, received {seed!r}"
    if not isinstance(body.get("watermark", False), bool):
        return "watermark: Expected boolean"
    return None


class AimlapiSimulator(core.Simulator[CreateRequest]):
    """The AI/ML API route's simulator (see `core.Simulator` for the shared behaviour).

    `settings` supplies the image rules (the product's, from the route's settings);
    `poll_rate_per_second` throttles status reads with 429 (None: no limit, as the docs
    give no figure); `generation_ttl_seconds` is how long a generation answers before 404.
    """

    ROUTE = "aimlapi"
    TITLE = "AI/ML API"
    STATUS_NAMES = STATUS_NAMES
    IMAGE_MAX_BYTES = FETCH_MAX_BYTES
    BODY_MAX_BYTES = core.data_url_body_max(FETCH_MAX_BYTES)
    FAULTS = Faults

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        settings: AimlapiSettings | None = None,
        models: Sequence[str] = MODELS,
        poll_rate_per_second: float | None = None,
        generation_ttl_seconds: float = GENERATION_TTL_SECONDS,
        **options: Unpack[core.SimulatorOptions],
    ) -> None:
        self._api_key = core.ApiKey(api_key)
        self._settings = settings or _DEFAULTS
        if self._settings.image_max_bytes > FETCH_MAX_BYTES:
            raise ValueError(f"settings.image_max_bytes must be at most {FETCH_MAX_BYTES}")
        super().__init__(host, port, poll_rate_per_second=poll_rate_per_second, **options)
        self._models = tuple(m for m in models if m)
        self._ttl = generation_ttl_seconds

    # -- routes ---------------------------------------------------------------------------

    def route(self, request: HttpRequest) -> Reply | None:
        if request.path.rstrip("/") != GENERATIONS_PATH:
            return None
        if not self._authorized(request.headers):
            return self.error_reply(401)
        if request.method == "POST":
            return self.submit(request)  # the model is in the body
        if request.method != "GET":
            return self.error_reply(405)
        return self._read(request.query.get("generation_id", []))

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return self._api_key.matches_bearer(headers.get("authorization", ""))

    def _read(self, ids: Sequence[str]) -> Reply:
        if (refused := self.refused_status_read()) is not None:
            return refused
        if len(ids) != 1 or not ids[0]:
            return _error(400, f"{ERROR_MESSAGES[400]}\ngeneration_id: Required")
        generation_id = ids[0]
        with self.locked():
            task = self.find_task(generation_id)
            if task is None or time.time() - task.created_at > self._ttl:
                return _error(404, UNKNOWN_GENERATION)
            return json_reply(200, self.task_body(task))

    # -- wire hooks -----------------------------------------------------------------------

    def parse_request(self, body: object, request: HttpRequest) -> CreateRequest | Reply:
        parsed = validate_create_body(body, models=self._models)
        if isinstance(parsed, str):
            return _error(400, f"{ERROR_MESSAGES[400]}\n{parsed}")
        return parsed[1]

    def created_reply(self, task: SimTask[CreateRequest]) -> Reply:
        return json_reply(200, {"id": task.task_id, "status": self.status_name(task)})

    def task_body(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        error = None
        if task.state is State.FAILED:
            reason = task.failure_reason or ""
            error = {"name": FAILURE_NAMES[core.failure_cause(reason)], "message": reason}
        return {
            "id": task.task_id,
            "status": self.status_name(task),
            "video": {"url": task.video_url} if task.video_url else None,
            "error": error,
        }

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        return _error(status, ERROR_MESSAGES[status], retry_after=retry_after)

    def check_image(self, data: bytes) -> None:
        # The rules are the product's (the route's settings); the reasons are theirs too.
        try:
            info = inspect_image(data)
            self._settings.check_image(info.format, info.width, info.height, len(data))
        except InvalidImage as exc:
            raise TaskFailed(f"image rejected: {exc.message}") from exc
        core.check_decodes(data)


def _error(status: int, message: str, *, retry_after: int | None = None) -> Reply:
    body = {
        "message": message,
        "path": GENERATIONS_PATH,
        "requestId": str(uuid.uuid4()),
        # The docs' example shows "429" as a string; a number is what such servers send.
        "statusCode": status,
        "timestamp": datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return json_reply(status, body, headers=core.retry_after_header(retry_after))


def main(argv: Sequence[str] | None = None) -> int:
    parser = core.cli_parser(
        AimlapiSimulator.ROUTE,
        "AI/ML API-compatible HappyHorse image-to-video simulator (loopback).",
        default_port=8093,
        default_poll_rate=0,
    )
    core.env_option(parser, "--api-key", env="AIMLAPI_SIM_API_KEY", help="Bearer key clients must send")
    parser.add_argument(
        "--generation-ttl",
        type=float,
        default=GENERATION_TTL_SECONDS,
        help="seconds a generation can be read before it answers 404 (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key is required (or env AIMLAPI_SIM_API_KEY)")
    return core.serve_until_stopped(
        lambda: AimlapiSimulator(
            api_key=args.api_key,
            generation_ttl_seconds=args.generation_ttl,
            **core.common_options(args),
        ),
        args.log_level,
    )


if __name__ == "__main__":
    raise SystemExit(main())
