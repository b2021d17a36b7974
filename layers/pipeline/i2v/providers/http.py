"""HTTP for every provider route, once: what counts as transient, Retry-After, error bodies.

A route's adapter builds its request (URL, headers, JSON body) and reads the JSON it gets
back; `call_json` does the rest the same way for every route:
- no connection (DNS, refused, connect timeout) and 408, 425, 429, 500, 502, 503, 504
  raise ProviderUnavailable, with the answer's Retry-After (seconds or an HTTP date) when
  there is one: the task is retried later with backoff (i2v/redelivery.py), never dropped;
- a request sent but never answered (read or write timeout, a reset mid-exchange) raises
  ProviderOutcomeUnknown: for a create call the provider may have made the task;
- any other 4xx or 5xx raises ProviderRejected with the provider's own words (`message`,
  `detail`, `title`, `error`, `invalid_params` / validation lists) and the code
  `PROVIDER_HTTP_<status>`: the task fails with that reason;
- a 2xx that is not JSON raises ProviderUnavailable (a proxy's error page, say).
Backoff itself is the queue's (SQS visibility), not a sleep here: a Lambda must not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from i2v.errors import ProviderOutcomeUnknown, ProviderRejected, ProviderUnavailable

if TYPE_CHECKING:
    import httpx

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_MESSAGE_FIELDS = ("message", "detail", "title", "error", "error_message", "msg")


def call_json(
    http: Callable[[], httpx.Client],
    method: str,
    url: str,
    *,
    route: str,
    headers: Mapping[str, str],
    body: Any = None,
) -> Any:
    """The JSON answer of one request to `route` (a name for messages), or the route's
    failure as ProviderUnavailable (retry later) or ProviderRejected (fail the task)."""
    import httpx

    try:
        response = http().request(method, url, json=body, headers=dict(headers))
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
        raise ProviderUnavailable(f"{route} unreachable: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:  # sent, or partly sent, and never answered
        raise ProviderOutcomeUnknown(f"{route} did not answer: {type(exc).__name__}") from exc
    if response.status_code in TRANSIENT_STATUSES:
        raise ProviderUnavailable(
            f"{route} answered {response.status_code}: {error_message(response)}",
            retry_after=retry_after(response.headers.get("retry-after")),
        )
    if response.is_error:
        raise ProviderRejected(
            f"{route} answered {response.status_code}: {error_message(response)}",
            code=f"PROVIDER_HTTP_{response.status_code}",
        )
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderUnavailable(f"{route} sent a non-JSON {response.status_code}") from exc


def retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if
    absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now())
        except (TypeError, ValueError):
            return None


def error_message(response: httpx.Response) -> str:
    """The provider's own explanation of an error answer, at most 1,000 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:500]
    message = next((str(body[f]) for f in _MESSAGE_FIELDS if isinstance(body.get(f), str) and body[f]), "")
    if not message and isinstance(body.get("error"), dict):  # {"error": {"message": ...}}
        message = str(body["error"].get("message") or "")
    problems = body.get("invalid_params") or []
    details = [f"{p.get('name')}: {p.get('reason')}" for p in problems if isinstance(p, dict)]
    return "; ".join(filter(None, [message, *details]))[:1000] or response.reason_phrase
