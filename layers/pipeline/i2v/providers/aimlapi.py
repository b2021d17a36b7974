"""Route 3: AI/ML API (api.aimlapi.com), a polling route: no webhooks, no cancel.

Wire format (../shared/PROVIDERS.md section 3, checked against AI/ML API's own docs,
https://docs.aimlapi.com/api-references/video-models/alibaba-cloud/happy-horse-1.0, whose
OpenAPI files are github.com/aimlapi/api-docs docs/api-references/video-models/
Alibaba-Cloud/happyhorse-1-0.json and universal-video-fetch.json):
- create: POST {base}/v2/video/generations, `Authorization: Bearer <key>`, a JSON body with
  `model` and `prompt` (both required), `image_url`, `resolution` (`720p` | `1080p`),
  `duration` (an integer, 3..15), `seed` (an integer, range unpublished); answers
  `{"id", "status"}`;
- status: GET {base}/v2/video/generations?generation_id=<id>, answering `{"id", "status",
  "video": {"url"} | null, "error": {"name", "message"} | null}` with `status` one of
  `queued`, `generating`, `completed`, `error`;
- errors: `{"message", "path", "requestId", "statusCode", "timestamp"}` (docs "Errors and
  messages"), read by i2v/providers/http.py like every route's.
What the docs leave out (image rules, prices, rate limits, how long a generation is kept,
the answer for an unknown id) is a setting, said so where it is defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from i2v.domain import ErrorInfo
from i2v.errors import ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.base import Credentials, ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.http import call_json
from i2v.providers.route import HttpClient, Route, RouteSettings

NAME = "aimlapi"
TITLE = "AI/ML API"
GENERATIONS_PATH = "/v2/video/generations"


def _default(name: str, default: object) -> Any:
    """RouteSettings' field `name` under this route's default. A bare redeclaration would
    drop the base field's bounds (`ge`, `le`, `gt`), and a bad value would load unchecked."""
    return FieldInfo.merge_field_infos(RouteSettings.model_fields[name], default=default)


class AimlapiSettings(RouteSettings):
    """`AIMLAPI_*`. The documented facts are defaults; the unpublished ones are marked."""

    base_url: str = "https://api.aimlapi.com"
    model_1_0: str = "alibaba/happyhorse-1-0"
    # Documented on the "Happy Horse 1.1" page of the same docs; an empty value turns it off.
    model_1_1: str = "alibaba/happyhorse-1.1"
    # The docs' example videos are served from cdn.aimlapi.com.
    video_allowed_hosts: tuple[str, ...] = (".aimlapi.com",)
    # PROVIDERS.md gives AI/ML API's published prices per generated second; it bills in
    # its own credits, so check them against the account.
    price_720p: float | None = _default("price_720p", 0.182)
    price_1080p: float | None = _default("price_1080p", 0.312)
    # Unpublished by AI/ML API: these are the upstream HappyHorse image rules (Alibaba's),
    # with the smaller of the two size limits its resellers quote (10 MB and 20 MB).
    image_formats: tuple[str, ...] = ("jpeg", "png", "webp")
    image_max_bytes: int = _default("image_max_bytes", 10 * 1024 * 1024)
    image_min_side_px: int = _default("image_min_side_px", 300)
    image_max_aspect_ratio: float | None = _default("image_max_aspect_ratio", 2.5)
    prompt_max_chars: int = _default("prompt_max_chars", 2500)  # unpublished; upstream's for Chinese
    # Documented: resolution 720p | 1080p, duration one of 3..15 s.
    resolutions: tuple[str, ...] = ("720P", "1080P")
    duration_min: int = _default("duration_min", 3)
    duration_max: int = _default("duration_max", 15)
    # The docs' own examples poll every 15 s (a generation took about 2.5 minutes).
    first_poll_seconds: int = _default("first_poll_seconds", 15)
    poll_interval_seconds: int = _default("poll_interval_seconds", 15)
    # Unpublished (a 429 exists, no figure is given): a conservative account-wide rate.
    poll_rate_per_second: float = _default("poll_rate_per_second", 2.0)
    result_ttl_seconds: int = _default("result_ttl_seconds", 24 * 3600)  # unpublished


# The one place provider statuses are mapped: the documented enum. Unknown values stay
# non-terminal; an unknown or expired id (HTTP 404) is GONE, in `status` below.
STATUS_MAP = {
    "queued": ProviderState.PENDING,
    "generating": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "error": ProviderState.FAILED,
}


class AimlapiVideo(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    url: str


class AimlapiError(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str = ""
    message: str = ""


class AimlapiGeneration(BaseModel):
    """The create answer and the status answer (the create answer has only id and status)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    id: str
    status: str
    video: AimlapiVideo | None = None
    error: AimlapiError | None = None


def to_update(provider_task_id: str, generation: AimlapiGeneration) -> ProviderUpdate:
    state = STATUS_MAP.get(generation.status.lower(), ProviderState.PENDING)
    error = None
    if state is ProviderState.FAILED:
        reason = generation.error
        words = ": ".join(filter(None, [reason.name, reason.message])) if reason else ""
        error = ErrorInfo(
            code="PROVIDER_FAILED",
            message=f"{TITLE} reported the generation failed: {words or 'no reason given'}",
        )
    return ProviderUpdate(
        provider_task_id=provider_task_id,
        state=state,
        raw_status=generation.status,
        video_url=generation.video.url if generation.video else None,
        error=error,
    )


class AimlapiProvider:
    name = NAME
    supports_webhooks = False

    def __init__(self, settings: AimlapiSettings, http: HttpClient, credentials: Credentials) -> None:
        self._settings = settings
        self._http = http
        self._credentials = credentials
        self._url = f"{settings.base_url.rstrip('/')}{GENERATIONS_PATH}"

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> AimlapiGeneration:
        headers = {"authorization": f"Bearer {self._credentials.api_key()}", "accept": "application/json"}
        payload = call_json(self._http, method, url, route=TITLE, headers=headers, body=body)
        try:
            return AimlapiGeneration.model_validate(payload)
        except ValidationError as exc:
            raise ProviderUnavailable(f"{TITLE} sent an unexpected body: {exc.error_count()} errors") from exc

    def submit(self, request: SubmitRequest) -> str:
        options = request.options
        version = options.model or "1.0"
        model = self._settings.model_id(version)
        if model is None:
            raise ProviderRejected(f"{TITLE} does not offer HappyHorse {version}", code="UNSUPPORTED_OPTION")
        body: dict[str, Any] = {
            "model": model,
            "prompt": options.prompt,  # required by the schema, even for image-to-video
            "image_url": request.image_url,
            "resolution": options.resolution.lower(),
            "duration": options.duration,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        return self._request("POST", self._url, body).id

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        from urllib.parse import urlencode

        url = f"{self._url}?{urlencode({'generation_id': provider_task_id})}"
        try:
            generation = self._request("GET", url)
        except ProviderRejected as exc:
            # The docs do not say how an unknown or expired id is answered; a 404 is taken
            # to mean the provider no longer knows it.
            if exc.code != "PROVIDER_HTTP_404":
                raise
            return ProviderUpdate(
                provider_task_id=provider_task_id, state=ProviderState.GONE, raw_status="HTTP 404"
            )
        return to_update(provider_task_id, generation)

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        return False  # AI/ML API documents no cancel call

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        raise Unauthorized(f"{TITLE} sends no webhooks: a callback on this route is not authentic")


ROUTE = Route(
    name=NAME,
    title=TITLE,
    settings=AimlapiSettings,
    factory=AimlapiProvider,
    webhooks=False,
)
