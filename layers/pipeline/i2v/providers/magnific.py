"""Route 1: Magnific (formerly the Freepik API). Webhooks signed like Standard Webhooks.

Wire format: ../shared/PROVIDERS.md section 1. What the provider does not publish
(pagination, webhook retries, rate-limit headers, tolerance window, its video CDN's host)
is a setting, noted where it matters below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from i2v.domain import ErrorInfo
from i2v.errors import ProviderRejected, ProviderUnavailable
from i2v.providers.base import Credentials, ProviderState, ProviderUpdate, SubmitRequest, webhook_envelope
from i2v.providers.http import call_json
from i2v.providers.route import HttpClient, Route, RouteSettings
from i2v.providers.signatures import verify_with_rotation

NAME = "magnific"


class MagnificSettings(RouteSettings):
    """`MAGNIFIC_*`. https://api.freepik.com serves the same paths as the default base URL."""

    base_url: str = "https://api.magnific.com"
    api_key_header: str = "x-magnific-api-key"  # older name: x-freepik-api-key
    model_1_0: str = "happy-horse-1"
    model_1_1: str = "happy-horse-1-1"
    # The CDN host of the videos is not published: check it against a real callback.
    video_allowed_hosts: tuple[str, ...] = (".magnific.com", ".freepik.com")
    # Magnific does not publish its HappyHorse price (PROVIDERS.md): no estimate unless set.
    price_720p: float | None = None
    price_1080p: float | None = None
    image_formats: tuple[str, ...] = ("jpeg", "png", "bmp", "webp")
    image_max_bytes: int = 10 * 1024 * 1024
    image_min_side_px: int = 300
    image_max_aspect_ratio: float | None = 2.5
    prompt_max_chars: int = 2500
    # A webhook route schedules no polls: the reconciler asks about a task whose webhook
    # never came (ReconcileAfterSeconds, 10 minutes by default).
    poll_rate_per_second: float = 10.0  # published: 50/s over 5 s, 10/s averaged over 2 min
    result_ttl_seconds: int = 24 * 3600  # unpublished


# The one place provider statuses are mapped. Unknown values stay non-terminal.
STATUS_MAP = {
    "CREATED": ProviderState.PENDING,
    "IN_PROGRESS": ProviderState.RUNNING,
    "COMPLETED": ProviderState.SUCCEEDED,
    "FAILED": ProviderState.FAILED,
}


class MagnificTask(BaseModel):
    """The task object: the webhook body, and `data` in create and status responses."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    task_id: str
    status: str
    generated: list[str] = []


class MagnificWebhook(MagnificTask):
    """The webhook body: the task object and nothing else (PROVIDERS.md); a field it does
    not define is refused with a 400 (decision 34), not guessed at."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


def to_update(task: MagnificTask) -> ProviderUpdate:
    state = STATUS_MAP.get(task.status.upper(), ProviderState.PENDING)
    error = None
    if state is ProviderState.FAILED:
        error = ErrorInfo(code="PROVIDER_FAILED", message="the provider reported the task FAILED")
    return ProviderUpdate(
        provider_task_id=task.task_id,
        state=state,
        raw_status=task.status,
        video_url=task.generated[0] if task.generated else None,
        error=error,
    )


class MagnificProvider:
    name = NAME
    supports_webhooks = True

    def __init__(self, settings: MagnificSettings, http: HttpClient, credentials: Credentials) -> None:
        self._settings = settings
        self._http = http
        self._credentials = credentials
        self._base = f"{settings.base_url.rstrip('/')}/v1/ai/image-to-video"

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {self._settings.api_key_header: self._credentials.api_key(), "accept": "application/json"}
        return call_json(self._http, method, url, route="Magnific", headers=headers, body=body)

    def _task(self, payload: Any) -> MagnificTask:
        data = payload.get("data") if isinstance(payload, dict) else None
        try:
            return MagnificTask.model_validate(data)
        except ValidationError as exc:
            raise ProviderUnavailable(
                f"Magnific sent an unexpected body: {exc.error_count()} errors"
            ) from exc

    def _endpoint(self, version: str) -> str:
        model = self._settings.model_id(version)
        if model is None:
            raise ProviderRejected(f"Magnific does not offer HappyHorse {version}", code="UNSUPPORTED_OPTION")
        return f"{self._base}/{model}"

    def submit(self, request: SubmitRequest) -> str:
        options = request.options
        body: dict[str, Any] = {
            "image_url": request.image_url,
            "resolution": options.resolution,
            "duration": options.duration,
        }
        if options.prompt:
            body["prompt"] = options.prompt
        if options.seed is not None:
            body["seed"] = options.seed
        if request.webhook_url:
            body["webhook_url"] = request.webhook_url
        endpoint = self._endpoint(options.model or "1.0")
        return self._task(self._request("POST", endpoint, body)).task_id

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        from urllib.parse import quote

        url = f"{self._endpoint(model or '1.0')}/{quote(provider_task_id, safe='')}"
        try:
            payload = self._request("GET", url)
        except ProviderRejected as exc:
            if exc.code != "PROVIDER_HTTP_404":
                raise
            # The provider does not know the id (never created, or expired).
            return ProviderUpdate(
                provider_task_id=provider_task_id, state=ProviderState.GONE, raw_status="404"
            )
        return to_update(self._task(payload))

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        return False  # Magnific documents no cancel call

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        verify_with_rotation(headers, body, self._credentials, encoding=self._settings.webhook_key_encoding)
        return to_update(webhook_envelope(MagnificWebhook, body, "a Magnific task object"))


ROUTE = Route(
    name=NAME,
    title="Magnific",
    settings=MagnificSettings,
    factory=MagnificProvider,
    webhooks=True,
    webhook_secret=True,
)
