"""A Model Studio (DashScope) compatible HappyHorse image-to-video simulator on loopback.

It speaks the DashScope wire format as ../shared/PROVIDERS.md (section 2) describes it: the
asynchronous create call (Bearer key, `X-DashScope-Async: enable` required, the model in the
body, the image as `input.media[]` with a `first_frame`, `parameters`), the task query at
`{prefix}/tasks/{task_id}` with its statuses (an unknown or expired id answers `UNKNOWN` with
HTTP 200), error bodies `{request_id, code, message}` and the documented query rate (20 per
second, then 429: the core's rate window). A polling route: no webhooks. Everything else
(tasks, faults, workers, the `data:` image URLs the route takes, rendering, video serving,
the control API and the command line) is the core, local/simulators/core/.

The path prefix is a constructor option, so APIYI (the same protocol behind another base URL
and prefix) is this class with another prefix: local/simulators/apiyi.py. Facts PROVIDERS.md
marks unknown or does not give are constructor options, each said so where it is used.

Run it on its own: `python -m local.simulators.dashscope --help` (see docs/simulator.md).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Unpack

from i2v.errors import InvalidImage
from i2v.media.image import inspect_image
from local.simulators import core
from local.simulators.core import HttpRequest, Reply, SimTask, State, TaskFailed, is_int, json_reply

MODELS = ("happyhorse-1.0-i2v", "happyhorse-1.1-i2v")
DEFAULT_PATH_PREFIX = "/api/v1"
CREATE_SUFFIX = "/services/aigc/video-generation/video-synthesis"
STATUS_NAMES: Mapping[State, str] = {
    State.CREATED: "PENDING",
    State.IN_PROGRESS: "RUNNING",
    State.COMPLETED: "SUCCEEDED",
    State.FAILED: "FAILED",
}
UNKNOWN_STATUS = "UNKNOWN"  # an unknown or expired task id, answered with HTTP 200
# CANCELED is documented too, but no cancel endpoint is: the simulator never produces it.
STATUSES = (*STATUS_NAMES.values(), "CANCELED", UNKNOWN_STATUS)
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", UNKNOWN_STATUS})

# The documented request rules.
RESOLUTIONS = ("720P", "1080P")
DURATION_MIN, DURATION_MAX = 3, 15  # APIYI's docs say 2..15: `duration_min`
SEED_MAX = 2_147_483_647
PROMPT_MAX_CHARS = 5000  # longer prompts are truncated, not refused (2,500 for Chinese)
TASK_TTL_SECONDS = 24 * 3600  # a task id is valid for 24 h, then answers UNKNOWN
POLL_RATE_PER_SECOND = 20.0  # task queries per second per account
# Unknown: 10 MB or 20 MB (sources differ), and whether BMP is taken. The fetch reads up to
# the larger bound; `image_max_bytes` and `accept_bmp` choose.
IMAGE_MAX_BYTES = 20 * 1024 * 1024
IMAGE_FORMATS = ("jpeg", "png", "webp")

# Error bodies are `{request_id, code, message}` (the shape is assumed, not seen verbatim).
# Codes given by PROVIDERS.md: InvalidParameter, InvalidURL, DataInspectionFailed, Arrearage
# (400) and Throttling* (429). The others, and every message, are the simulator's wording.
ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("Arrearage", "Access denied, please make sure your account is in good standing."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    404: ("NotFound", "Not found."),
    405: ("MethodNotAllowed", "Method not allowed."),
    413: ("RequestTooLarge", "Request body too large."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
    503: ("ServiceUnavailable", "The service is unavailable, please try again later."),
}
ERROR_STATUSES = frozenset({400, 401, 429, 500, 503})  # injectable on create calls and queries
# PROVIDERS.md says a create call without `X-DashScope-Async: enable` is refused, not how:
# the status, code and message are the `sync_refusal` constructor option.
SYNC_REFUSAL = (403, "AccessDenied", "current user api does not support synchronous calls")
# A failed task's `output.code`: the simulator's choice among the documented codes.
FAILURE_CODES: Mapping[core.FailureCause, str] = {
    core.FailureCause.IMAGE_FETCH: "InvalidURL",
    core.FailureCause.IMAGE: "InvalidParameter",
    core.FailureCause.OTHER: "InternalError",
}

__all__ = [
    "DEFAULT_PATH_PREFIX",
    "MODELS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "CreateRequest",
    "DashScopeSimulator",
    "Faults",
    "main",
    "validate_create_body",
]


@dataclass(frozen=True)
class CreateRequest(core.ImageToVideoRequest):
    """A create call once it passed validation, with the documented defaults applied."""

    watermark: bool = True
    webhook_url: str | None = None  # a polling route: always None


@dataclass
class Faults(core.Faults):
    """Faults to inject; counts apply to the next N create calls, task queries or tasks."""

    ERROR_STATUSES: ClassVar[frozenset[int]] = ERROR_STATUSES


def validate_create_body(
    body: object,
    *,
    models: Sequence[str] = MODELS,
    duration_min: int = DURATION_MIN,
) -> tuple[str, CreateRequest] | str:
    """The model and request of a create body, or the reason it is refused (InvalidParameter)."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    model = body.get("model")
    if not isinstance(model, str) or model not in models:
        return f"Model not exist: {model}" if isinstance(model, str) and model else "Field required: model"
    image = _first_frame(body.get("input"))
    if not isinstance(image, tuple):
        return image
    url, prompt = image
    parameters = body.get("parameters", {})
    problem = _parameters_problem(parameters, duration_min)
    if problem:
        return problem
    return model, CreateRequest(
        image_url=url,
        prompt=prompt[:PROMPT_MAX_CHARS],
        resolution=parameters.get("resolution", "1080P"),
        duration=parameters.get("duration", 5),
        seed=parameters.get("seed"),
        watermark=parameters.get("watermark", True),
    )


def _first_frame(value: object) -> tuple[str, str] | str:
    """(image URL, prompt) from `input`, or the problem."""
    if not isinstance(value, dict):
        return "Field required: input"
    prompt = value.get("prompt", "")
    if not isinstance(prompt, str):
        return "input.prompt must be a string"
    # HappyHorse takes `input.media[]`; the older models' `img_url` is not read.
    media = value.get("media")
    if not isinstance(media, list) or not media:
        return "Field required: input.media"
    frames = [item for item in media if isinstance(item, dict) and item.get("type") == "first_frame"]
    if len(frames) != 1 or len(frames) != len(media):
        return "input.media must hold exactly one item of type first_frame"
    url = frames[0].get("url")
    if not isinstance(url, str) or not core.is_image_url(url):
        return "input.media[0].url must be an http(s) or data: URL"
    return url, prompt


def _parameters_problem(parameters: object, duration_min: int) -> str | None:
    # Unknown fields are ignored; whether the provider accepts null is unknown, so null is refused.
    if not isinstance(parameters, dict):
        return "parameters must be an object"
    if "resolution" in parameters and parameters["resolution"] not in RESOLUTIONS:
        return f"parameters.resolution must be one of {', '.join(RESOLUTIONS)}"
    duration = parameters.get("duration", 5)
    if not (is_int(duration) and duration_min <= duration <= DURATION_MAX):
        return f"parameters.duration must be an integer between {duration_min} and {DURATION_MAX}"
    seed = parameters.get("seed", 0)
    if not (is_int(seed) and 0 <= seed <= SEED_MAX):
        return f"parameters.seed must be an integer between 0 and {SEED_MAX}"
    if not isinstance(parameters.get("watermark", True), bool):
        return "parameters.watermark must be a boolean"
    return None


def _timestamp(seconds: float) -> str:
    # The format is not in PROVIDERS.md; this is the one DashScope task objects are seen with.
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class DashScopeSimulator(core.Simulator[CreateRequest]):
    """The Model Studio route's simulator (see `core.Simulator` for the shared behaviour).

    `path_prefix` is where the API lives (`/api/v1`; APIYI: `/wan/api/v1`), and
    `task_path_prefix` where the task query lives (default: the same prefix; APIYI's is
    unverified). The other options are facts PROVIDERS.md leaves open or the route's rules.
    """

    ROUTE = "dashscope"
    TITLE = "Model Studio (DashScope)"
    STATUS_NAMES = STATUS_NAMES
    IMAGE_MAX_BYTES = IMAGE_MAX_BYTES
    BODY_MAX_BYTES = core.data_url_body_max(IMAGE_MAX_BYTES)
    FAULTS = Faults
    DEFAULT_PATH_PREFIX: ClassVar[str] = DEFAULT_PATH_PREFIX
    DURATION_MIN: ClassVar[int] = DURATION_MIN

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        path_prefix: str | None = None,
        task_path_prefix: str | None = None,
        models: Sequence[str] = MODELS,
        duration_min: int | None = None,
        image_max_bytes: int = IMAGE_MAX_BYTES,
        accept_bmp: bool = True,
        task_ttl_seconds: float = TASK_TTL_SECONDS,
        poll_rate_per_second: float | None = POLL_RATE_PER_SECOND,
        sync_refusal: tuple[int, str, str] = SYNC_REFUSAL,
        **options: Unpack[core.SimulatorOptions],
    ) -> None:
        self._api_key = core.ApiKey(api_key)
        if not 0 < image_max_bytes <= IMAGE_MAX_BYTES:
            raise ValueError(f"image_max_bytes must be between 1 and {IMAGE_MAX_BYTES}")
        super().__init__(host, port, poll_rate_per_second=poll_rate_per_second, **options)
        self.path_prefix = _prefix(path_prefix if path_prefix is not None else self.DEFAULT_PATH_PREFIX)
        self.task_path_prefix = (
            _prefix(task_path_prefix) if task_path_prefix is not None else self.path_prefix
        )
        self._task_path = re.compile(rf"^{re.escape(self.task_path_prefix)}/tasks/([^/]+)/?$")
        self._models = tuple(models)
        self._duration_min = duration_min if duration_min is not None else self.DURATION_MIN
        self._image_max_bytes = image_max_bytes
        # BMP: unknown (PROVIDERS.md); taken by default, like the other routes.
        self._image_formats = (*IMAGE_FORMATS, "bmp") if accept_bmp else IMAGE_FORMATS
        self._task_ttl = task_ttl_seconds
        self._sync_refusal = sync_refusal

    @property
    def base_url(self) -> str:
        """What a client takes as its base URL, e.g. http://127.0.0.1:8091/api/v1."""
        return f"{self.url}{self.path_prefix}"

    # -- routes ---------------------------------------------------------------------------

    def route(self, request: HttpRequest) -> Reply | None:
        if request.path.rstrip("/") == f"{self.path_prefix}{CREATE_SUFFIX}":
            return self._create(request)
        match = self._task_path.match(request.path)
        if match is None:
            return None
        if not self._authorized(request.headers):
            return self.error_reply(401)
        if request.method != "GET":
            return self.error_reply(405)
        if (refused := self.refused_status_read()) is not None:
            return refused
        return self._query(match.group(1))

    def _create(self, request: HttpRequest) -> Reply:
        if not self._authorized(request.headers):
            return self.error_reply(401)
        if request.method != "POST":
            return self.error_reply(405)
        if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
            status, code, message = self._sync_refusal
            return _error(status, code, message)
        return self.submit(request)  # the model is in the body

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return self._api_key.matches_bearer(headers.get("authorization", ""))

    def _query(self, task_id: str) -> Reply:
        with self.locked():
            task = self.find_task(task_id)
            if task is None or time.time() - task.created_at > self._task_ttl:
                output: dict[str, Any] = {"task_id": task_id, "task_status": UNKNOWN_STATUS}
                return json_reply(200, {"request_id": _request_id(), "output": output})
            payload: dict[str, Any] = {"request_id": _request_id(), "output": self.task_body(task)}
            if task.state is State.COMPLETED:
                payload["usage"] = _usage(task.request)
            return json_reply(200, payload)

    # -- wire hooks -----------------------------------------------------------------------

    def parse_request(self, body: object, request: HttpRequest) -> CreateRequest | Reply:
        parsed = validate_create_body(body, models=self._models, duration_min=self._duration_min)
        if isinstance(parsed, str):
            return _error(400, "InvalidParameter", parsed)
        return parsed[1]

    def created_reply(self, task: SimTask[CreateRequest]) -> Reply:
        output = {"task_id": task.task_id, "task_status": self.status_name(task)}
        return json_reply(200, {"request_id": _request_id(), "output": output})

    def task_body(self, task: SimTask[CreateRequest]) -> dict[str, Any]:
        """The task's `output` object; keys appear as their facts become known."""
        body: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": self.status_name(task),
            "submit_time": _timestamp(task.created_at),
        }
        ended = task.times.get(task.state) if task.state in core.TERMINAL_STATES else None
        # A task that fails before it runs (its image) is scheduled when it ends.
        scheduled = task.times.get(State.IN_PROGRESS, ended)
        if scheduled is not None:
            body["scheduled_time"] = _timestamp(scheduled)
        if ended is not None:
            body["end_time"] = _timestamp(ended)
        if task.video_url:
            body["video_url"] = task.video_url
        if task.state is State.FAILED:
            reason = task.failure_reason or ""
            body["code"], body["message"] = FAILURE_CODES[core.failure_cause(reason)], reason
        return body

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        code, message = ERROR_CODES[status]
        return _error(status, code, message, retry_after=retry_after)

    def check_image(self, data: bytes) -> None:
        # Only the format and size are published for this route: no side or aspect rules.
        core.check_size(len(data), self._image_max_bytes)
        try:
            image_format = inspect_image(data).format
        except InvalidImage as exc:
            raise TaskFailed("image format is not supported or cannot be read") from exc
        if image_format not in self._image_formats:
            raise TaskFailed(f"image format {image_format.upper()} is not supported")
        core.check_decodes(data)


def _prefix(prefix: str) -> str:
    cleaned = "/" + prefix.strip("/")
    return "" if cleaned == "/" else cleaned


def _request_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, code: str, message: str, *, retry_after: int | None = None) -> Reply:
    body = {"request_id": _request_id(), "code": code, "message": message}
    return json_reply(status, body, headers=core.retry_after_header(retry_after))


def _usage(request: CreateRequest) -> dict[str, Any]:
    # The fields are documented; their value types are not (SR as the short side in pixels).
    return {
        "duration": request.duration,
        "output_video_duration": request.duration,
        "video_count": 1,
        "SR": 720 if request.resolution == "720P" else 1080,
    }


def cli_main(
    simulator: type[DashScopeSimulator],
    argv: Sequence[str] | None,
    *,
    env_prefix: str,
    default_port: int,
) -> int:
    """The command line of a DashScope-protocol route (Model Studio, APIYI)."""
    parser = core.cli_parser(
        simulator.ROUTE,
        f"{simulator.TITLE}-compatible HappyHorse image-to-video simulator (loopback).",
        default_port=default_port,
        default_poll_rate=POLL_RATE_PER_SECOND,
    )
    key_env = f"{env_prefix}_SIM_API_KEY"
    core.env_option(parser, "--api-key", env=key_env, help="Bearer key clients must send")
    parser.add_argument(
        "--path-prefix",
        default=simulator.DEFAULT_PATH_PREFIX,
        help="where the API lives (default: %(default)s)",
    )
    parser.add_argument(
        "--task-path-prefix", default=None, help="where the task query lives (default: --path-prefix)"
    )
    parser.add_argument(
        "--task-ttl",
        type=float,
        default=TASK_TTL_SECONDS,
        help="seconds a task id answers before UNKNOWN (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error(f"--api-key is required (or env {key_env})")
    return core.serve_until_stopped(
        lambda: simulator(
            api_key=args.api_key,
            path_prefix=args.path_prefix,
            task_path_prefix=args.task_path_prefix,
            task_ttl_seconds=args.task_ttl,
            **core.common_options(args),
        ),
        args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(DashScopeSimulator, argv, env_prefix="DASHSCOPE", default_port=8091)


if __name__ == "__main__":
    raise SystemExit(main())
