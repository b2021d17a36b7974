"""The one small interface every HappyHorse route implements.

A route module turns our request into its wire format and its answers (create
response, status response, webhook) into a `ProviderUpdate`. Nothing else in the
pipeline knows a provider's wire format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from i2v.domain import ErrorInfo, Frozen, Options
from i2v.errors import BadCallback

Envelope = TypeVar("Envelope", bound=BaseModel)
_NAMED_FIELDS = 5
_NAME_CHARS = 40


class ProviderState(StrEnum):
    """A provider status, normalised. Unknown provider values map to PENDING (non-terminal)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    GONE = "GONE"
    """The provider does not know the task id (never created, or expired): DashScope's
    `UNKNOWN`, a 404 on a status endpoint. The task FAILS with PROVIDER_TASK_GONE (an id
    is only ever asked about after the provider returned it)."""


class SubmitRequest(Frozen):
    image_url: str
    options: Options
    webhook_url: str | None = None


class ProviderUpdate(Frozen):
    provider_task_id: str
    state: ProviderState
    raw_status: str
    video_url: str | None = None
    error: ErrorInfo | None = None


class Credentials(Protocol):
    """Secrets, fetched only when a call needs them (the callback never needs the API key)."""

    def api_key(self) -> str: ...

    def webhook_secret(self) -> str: ...

    def rotated_webhook_secrets(self) -> Sequence[str]:
        """Secrets to try when a signature matches none held: what a rotation may have
        brought (the value stored now, the one it replaced). Read at most once a minute."""
        ...


class Provider(Protocol):
    """A route's adapter. `submit` and `status` raise ProviderUnavailable (retry later) or
    ProviderRejected (fail the task); the shared HTTP rules are i2v/providers/http.py."""

    name: str
    supports_webhooks: bool

    def submit(self, request: SubmitRequest) -> str:
        """Create a task; return the provider's task id.

        Raises ProviderUnavailable (retry later) or ProviderRejected (fail the task).
        """
        ...

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        """Ask for a task's current status (polls, the finalizer and the reconciler).

        `model` is the task's HappyHorse version (`Options.model`): some routes' status
        paths name the model."""
        ...

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        """Ask the provider to stop a task we gave up on; False where the route cannot."""
        ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        """Verify a webhook's signature over the raw body, then parse it.

        Raises Unauthorized when the signature does not check out, BadCallback when an
        authentic body cannot be parsed.
        """
        ...


def webhook_envelope(model: type[Envelope], body: bytes, what: str) -> Envelope:
    """An authentic webhook's body read as its route documents it, or BadCallback (a 400)
    saying why: not JSON, a documented field of the wrong type, or a field the envelope
    does not define (named, shortened: they are the sender's words). `model` forbids
    extra fields at the envelope only; what a model returns inside it (fal's `payload`)
    stays open."""
    try:
        return model.model_validate(json.loads(body))
    except ValueError as exc:  # ValidationError is a ValueError: take it apart first
        if not isinstance(exc, ValidationError):
            raise BadCallback(f"webhook body is not JSON; expected {what}") from exc
        unknown = [str(e["loc"][0])[:_NAME_CHARS] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown and len(unknown) == exc.error_count():
            names = ", ".join(unknown[:_NAMED_FIELDS]) + (", ..." if len(unknown) > _NAMED_FIELDS else "")
            raise BadCallback(f"webhook body has fields {what} does not define: {names}") from exc
        raise BadCallback(f"webhook body is not {what}: {exc.error_count()} invalid fields") from exc
