"""Route: fal.ai's queue. Webhooks signed with Ed25519 public keys (a JWKS), not a secret.

Wire format: ../shared/PROVIDERS.md section 4, checked against fal's docs and fal-client:
- submit `POST {base}/{model_id}?fal_webhook=<url>` with `Authorization: Key <key>`; the
  answer's `request_id` is the queue's id (`gateway_request_id` changes when fal retries);
- status, result and cancel live under `{base}/{owner}/{app}/requests/{id}`: the model
  id's endpoint path (`image-to-video`) is left out (fal's Inference API reference);
- a webhook is signed over `request_id \\n user_id \\n timestamp \\n sha256_hex(body)`
  with any key of fal's JWKS. `cryptography` is imported on that path only, so routes
  that never verify a fal webhook do not pay for it at cold start.
What fal does not publish (its rate limits, which CDN hosts serve videos, how long a CDN
file lives by default, whether `duration` is an integer or a string) is a setting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from i2v.domain import ErrorInfo
from i2v.errors import BadCallback, ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.base import Credentials, ProviderState, ProviderUpdate, SubmitRequest, webhook_envelope
from i2v.providers.http import call_json, error_words
from i2v.providers.route import HttpClient, Route, RouteSettings

NAME = "fal"
WEBHOOK_HEADERS = ("x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp")
SIGNATURE_HEADER = "x-fal-webhook-signature"
ED25519_SIGNATURE_BYTES = 64
ED25519_KEY_BYTES = 32


class FalSettings(RouteSettings):
    """`FAL_*`. Sources: fal.ai/models/alibaba/happy-horse/image-to-video (llms.txt: inputs,
    prices, image rules), fal.ai/docs (queue, webhooks, data retention)."""

    base_url: str = "https://queue.fal.run"
    model_1_0: str = "alibaba/happy-horse/image-to-video"
    # Seen only in third-party docs, not on fal's own model pages: check before relying on it.
    model_1_1: str = "alibaba/happy-horse/v1.1/image-to-video"
    # Most copies of fal's verification guide name rest.alpha.fal.ai, others rest.fal.ai.
    jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    jwks_cache_seconds: int = Field(default=24 * 3600, gt=0, le=24 * 3600)  # fal: at most 24 h
    # A signature no cached key verifies refetches the JWKS at most this often, so forged
    # webhooks cannot make every callback a JWKS download.
    jwks_refresh_min_seconds: int = Field(default=60, ge=0)
    webhook_tolerance_seconds: int = Field(default=300, gt=0)
    enable_safety_checker: bool = True
    # The page lists 3..15 as numbers beside a default written "5": sent as an integer
    # unless this says otherwise.
    duration_as_string: bool = False
    # fal serves outputs from its CDN (v3.fal.media, v3b.fal.media, fal.media); the host of
    # HappyHorse's videos in particular is not published.
    video_allowed_hosts: tuple[str, ...] = (".fal.media",)
    price_720p: float | None = 0.14
    price_1080p: float | None = 0.28
    image_formats: tuple[str, ...] = ("jpeg", "png", "bmp", "webp")
    image_max_bytes: int = 10 * 1024 * 1024
    image_min_side_px: int = 300
    image_max_aspect_ratio: float | None = 2.5
    prompt_max_chars: int = 2500
    # A webhook route schedules no polls: the reconciler asks about a task whose webhook
    # never came (ReconcileAfterSeconds, 10 minutes by default).
    poll_rate_per_second: float = 10.0  # unpublished
    # The queue keeps a result 1 h after completion (6 min when 10 KB or more): past that a
    # lost webhook's video URL cannot be read back. CDN files do not expire by default
    # unless the account's storage settings say so.
    result_ttl_seconds: int = 3600


# The one place fal's statuses are mapped: the queue's (IN_QUEUE, IN_PROGRESS, COMPLETED),
# the webhook's (OK, ERROR) and NOT_FOUND, an unknown or expired request id (a 404).
# A COMPLETED status that carries an error reads as ERROR. Unknown values stay open.
STATUS_MAP = {
    "IN_QUEUE": ProviderState.PENDING,
    "IN_PROGRESS": ProviderState.RUNNING,
    "COMPLETED": ProviderState.SUCCEEDED,
    "OK": ProviderState.SUCCEEDED,
    "ERROR": ProviderState.FAILED,
    "NOT_FOUND": ProviderState.GONE,
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class QueueStatus(_Wire):
    status: str
    error: str | None = None
    error_type: str | None = None


class FalWebhook(BaseModel):
    """fal's webhook envelope, exactly as documented; `payload` is the model's output, open."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    request_id: str
    gateway_request_id: str | None = None
    status: Literal["OK", "ERROR"]
    payload: Any = None
    error: str | None = None
    payload_error: str | None = None


def video_url_of(payload: object) -> str | None:
    """`payload.video.url` of a result, or None (HappyHorse's output is `{video: File, seed}`)."""
    video = payload.get("video") if isinstance(payload, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    return url if isinstance(url, str) and url else None


def to_update(
    request_id: str, raw_status: str, *, video_url: str | None = None, error: str = ""
) -> ProviderUpdate:
    state = STATUS_MAP.get(raw_status, ProviderState.PENDING)
    info = None
    if state is ProviderState.FAILED:
        info = ErrorInfo(code="PROVIDER_FAILED", message=error or "fal reported the request failed")
    return ProviderUpdate(
        provider_task_id=request_id, state=state, raw_status=raw_status, video_url=video_url, error=info
    )


@dataclass
class _Keys:
    """fal's public keys (raw 32-byte Ed25519), when they were fetched and last tried."""

    keys: tuple[bytes, ...] = ()
    fetched_at: float | None = None
    tried_at: float | None = None


class FalProvider:
    name = NAME
    supports_webhooks = True

    def __init__(
        self,
        settings: FalSettings,
        http: HttpClient,
        credentials: Credentials,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._http = http
        self._credentials = credentials
        self._clock = clock
        self._base = settings.base_url.rstrip("/")
        # The adapter is made once per process: its cache serves every webhook it verifies.
        self._jwks = _Keys()
        self._jwks_lock = threading.Lock()

    # -- requests -------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"authorization": f"Key {self._credentials.api_key()}", "accept": "application/json"}
        # fal's 422s are FastAPI `detail` lists: call_json words them `field: msg; ...`.
        return call_json(self._http, method, url, route="fal", headers=headers, body=body)

    def _model(self, version: str) -> str:
        model = self._settings.model_id(version)
        if model is None:
            raise ProviderRejected(f"fal does not offer HappyHorse {version}", code="UNSUPPORTED_OPTION")
        return model

    def _request_url(self, request_id: str, model: str | None) -> str:
        # fal's status, result and cancel paths name the owner and the app only.
        owner_app = "/".join(self._model(model or "1.0").split("/")[:2])
        return f"{self._base}/{owner_app}/requests/{quote(request_id, safe='')}"

    def submit(self, request: SubmitRequest) -> str:
        options = request.options
        body: dict[str, Any] = {
            "image_url": request.image_url,
            "resolution": options.resolution.lower(),
            "duration": str(options.duration) if self._settings.duration_as_string else options.duration,
            "enable_safety_checker": self._settings.enable_safety_checker,
        }
        if options.prompt:
            body["prompt"] = options.prompt
        if options.seed is not None:
            body["seed"] = options.seed
        url = f"{self._base}/{self._model(options.model or '1.0')}"
        if request.webhook_url:
            url += "?" + urlencode({"fal_webhook": request.webhook_url})
        answer = self._request("POST", url, body)
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailable("fal's submit answer has no request_id")
        return request_id

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        base = self._request_url(provider_task_id, model)
        try:
            queued = QueueStatus.model_validate(self._request("GET", f"{base}/status"))
        except ValidationError as exc:
            raise ProviderUnavailable(
                f"fal sent an unexpected status body: {exc.error_count()} errors"
            ) from exc
        except ProviderRejected as exc:
            if exc.code == "PROVIDER_HTTP_404":
                return to_update(provider_task_id, "NOT_FOUND")
            raise
        if queued.status != "COMPLETED":
            return to_update(provider_task_id, queued.status)
        if queued.error:
            words = f"{queued.error_type}: {queued.error}" if queued.error_type else queued.error
            return to_update(provider_task_id, "ERROR", error=words)
        try:
            result = self._request("GET", base)
        except ProviderRejected as exc:  # the result answers with the model's own error
            if exc.code == "PROVIDER_HTTP_404":
                return to_update(provider_task_id, "NOT_FOUND")
            return to_update(provider_task_id, "ERROR", error=exc.message)
        return to_update(provider_task_id, "COMPLETED", video_url=video_url_of(result))

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        try:
            self._request("PUT", f"{self._request_url(provider_task_id, model)}/cancel")
        except ProviderRejected as exc:
            # 400 ALREADY_COMPLETED, 404 NOT_FOUND: nothing left to stop.
            if exc.code in ("PROVIDER_HTTP_400", "PROVIDER_HTTP_404"):
                return False
            raise
        return True

    # -- webhooks -------------------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        request_id = self._verify(headers, body)
        hook = webhook_envelope(FalWebhook, body, "a fal webhook")
        if hook.request_id != request_id:
            raise BadCallback("webhook body names another request than its signed headers")
        if hook.status == "ERROR":
            words = "; ".join(filter(None, [hook.error, error_words(hook.payload), hook.payload_error]))
            return to_update(hook.request_id, "ERROR", error=words)
        return to_update(hook.request_id, "OK", video_url=video_url_of(hook.payload))

    def _verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """The signed request id, or Unauthorized with a short reason."""
        lowered = {k.lower(): v for k, v in headers.items()}
        missing = [name for name in (*WEBHOOK_HEADERS, SIGNATURE_HEADER) if not lowered.get(name)]
        if missing:
            raise Unauthorized(f"webhook lacks {', '.join(missing)}")
        request_id, user_id, timestamp = (lowered[name] for name in WEBHOOK_HEADERS)
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise Unauthorized("webhook timestamp is not a number") from None
        if abs(self._clock() - sent_at) > self._settings.webhook_tolerance_seconds:
            raise Unauthorized("webhook timestamp is outside the tolerance window")
        try:
            signature = bytes.fromhex(lowered[SIGNATURE_HEADER])
        except ValueError:
            raise Unauthorized("webhook signature is not hex") from None
        if len(signature) != ED25519_SIGNATURE_BYTES:
            raise Unauthorized("webhook signature is not an Ed25519 signature")
        message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
        if _verifies(self._keys(refresh=False), signature, message):
            return request_id
        # A key fal rotated in since the cache was filled: refetch, but not for every forgery.
        if self._refresh_due() and _verifies(self._keys(refresh=True), signature, message):
            return request_id
        raise Unauthorized("no key of fal's JWKS verifies the webhook signature")

    def _keys(self, *, refresh: bool) -> tuple[bytes, ...]:
        with self._jwks_lock:
            now = self._clock()
            cache = self._jwks
            fresh = (
                cache.fetched_at is not None and now - cache.fetched_at < self._settings.jwks_cache_seconds
            )
            if fresh and not refresh:
                return cache.keys
            cache.tried_at = now
            cache.keys, cache.fetched_at = self._fetch_jwks(), now
            return cache.keys

    def _refresh_due(self) -> bool:
        with self._jwks_lock:
            tried = self._jwks.tried_at
            return tried is None or self._clock() - tried >= self._settings.jwks_refresh_min_seconds

    def _fetch_jwks(self) -> tuple[bytes, ...]:
        """fal's Ed25519 keys; an unreachable JWKS raises ProviderUnavailable (fal retries)."""
        answer = call_json(
            self._http,
            "GET",
            self._settings.jwks_url,
            route="fal JWKS",
            headers={"accept": "application/json"},
        )
        entries = answer.get("keys") if isinstance(answer, dict) else None
        return tuple(key for entry in entries or [] if (key := jwk_ed25519_key(entry)) is not None)


def jwk_ed25519_key(entry: object) -> bytes | None:
    """The raw public key of an OKP/Ed25519 JWK; `x` is base64url, padded or not."""
    if (
        not isinstance(entry, dict)
        or entry.get("kty", "OKP") != "OKP"
        or entry.get("crv", "Ed25519") != "Ed25519"
    ):
        return None
    x = entry.get("x")
    if not isinstance(x, str):
        return None
    bare = x.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == ED25519_KEY_BYTES else None


def _verifies(keys: tuple[bytes, ...], signature: bytes, message: bytes) -> bool:
    """True when any key verifies: the only place `cryptography` is imported."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


ROUTE = Route(
    name=NAME,
    title="fal.ai",
    settings=FalSettings,
    factory=FalProvider,
    webhooks=True,
    webhook_secret=False,
    can_cancel=True,
)
