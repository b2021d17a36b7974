"""Route 1: Magnific (formerly the Freepik API). Webhooks signed like Standard Webhooks.

Wire format: ../shared/PROVIDERS.md section 1. What the provider does not publish
(pagination, webhook retries, rate-limit headers, tolerance window) is noted where it
matters below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from i2v.domain import ErrorInfo, Options
from i2v.errors import BadCallback, ProviderUnavailable, Unauthorized
from i2v.providers.base import Credentials, ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.http import call_json

if TYPE_CHECKING:
    import httpx

NAME = "magnific"

# The one place provider statuses are mapped. Unknown values stay non-terminal.
STATUS_MAP = {
    "CREATED": ProviderState.PENDING,
    "IN_PROGRESS": ProviderState.RUNNING,
    "COMPLETED": ProviderState.SUCCEEDED,
    "FAILED": ProviderState.FAILED,
}

# Reseller prices per generated second (PROVIDERS.md); an estimate, not a bill.
PRICE_PER_SECOND_USD = {"720P": 0.182, "1080P": 0.312}


class MagnificTask(BaseModel):
    """The task object: the webhook body, and `data` in create and status responses."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    task_id: str
    status: str
    generated: list[str] = []


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


def webhook_key(secret: str) -> str | bytes:
    """Standard Webhooks `whsec_<base64>` secrets are decoded; anything else is raw UTF-8."""
    return secret if secret.startswith("whsec_") else secret.encode("utf-8")


class MagnificProvider:
    name = NAME
    supports_webhooks = True

    def __init__(
        self,
        http: Callable[[], httpx.Client],
        *,
        credentials: Credentials,
        base_url: str = "https://api.magnific.com",
        api_key_header: str = "x-magnific-api-key",
        model: str = "happy-horse-1",
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._endpoint = f"{base_url.rstrip('/')}/v1/ai/image-to-video/{model}"
        self._api_key_header = api_key_header

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {self._api_key_header: self._credentials.api_key(), "accept": "application/json"}
        return call_json(self._http, method, url, route="Magnific", headers=headers, body=body)

    def _task(self, payload: Any) -> MagnificTask:
        data = payload.get("data") if isinstance(payload, dict) else None
        try:
            return MagnificTask.model_validate(data)
        except ValidationError as exc:
            raise ProviderUnavailable(
                f"Magnific sent an unexpected body: {exc.error_count()} errors"
            ) from exc

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
        return self._task(self._request("POST", self._endpoint, body)).task_id

    def status(self, provider_task_id: str) -> ProviderUpdate:
        from urllib.parse import quote

        payload = self._request("GET", f"{self._endpoint}/{quote(provider_task_id, safe='')}")
        return to_update(self._task(payload))

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        self._verify_signature(headers, body)
        try:
            task = MagnificTask.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise BadCallback("webhook body is not a Magnific task object") from exc
        return to_update(task)

    def _verify_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        # The reference package checks the headers, the +-5 minute window (the provider's
        # own window is unpublished) and every `v1,` entry of the header (key rotation).
        from standardwebhooks import Webhook

        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            Webhook(webhook_key(self._credentials.webhook_secret())).verify(body, lowered, json_parse=False)
        except Exception as exc:
            raise Unauthorized(f"webhook signature rejected ({type(exc).__name__})") from exc

    def estimate_cost_usd(self, options: Options) -> float | None:
        return round(PRICE_PER_SECOND_USD[options.resolution] * options.duration, 3)
