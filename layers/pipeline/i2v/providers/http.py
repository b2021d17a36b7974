"""HTTP for every provider route, once: what counts as transient, Retry-After, error bodies.

A route's adapter builds its request (URL, headers, JSON body) and reads the JSON it gets
back; `call_json` does the rest the same way for every route:
- no connection (DNS, refused, connect timeout) and 408, 425, 429, 500, 502, 503, 504
  raise ProviderUnavailable, with the answer's Retry-After (seconds or an HTTP date) when
  there is one: the task is retried later with backoff (i2v/redelivery.py), never dropped;
- a request sent but never answered (read or write timeout, a reset mid-exchange) raises
  ProviderOutcomeUnknown: for a create call the provider may have made the task;
- any other 4xx or 5xx raises ProviderRejected with the provider's own words (`message`,
  `detail`, `title`, `error`, and the validation lists `invalid_params` and FastAPI's
  `detail: [{loc, msg}]`) and the code `PROVIDER_HTTP_<status>`: the task fails with that
  reason;
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
# FastAPI's `loc` starts with where the field was; the field's own path follows.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


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
    return error_words(body) or response.reason_phrase


def error_words(body: object) -> str:
    """The provider's own words in a JSON error body (also a webhook's error payload), at
    most 1,000 characters; "" when it has none.

    A message field (`{"error": {"message"}}` too), then each problem of a validation list:
    `invalid_params: [{name, reason}]` and FastAPI's `detail: [{loc, msg, type}]`, both
    rendered `field: reason` and joined with "; "."""
    if not isinstance(body, dict):
        return ""
    message = next((str(body[f]) for f in _MESSAGE_FIELDS if isinstance(body.get(f), str) and body[f]), "")
    if not message and isinstance(body.get("error"), dict):  # {"error": {"message": ...}}
        message = str(body["error"].get("message") or "")
    params = [p for p in _list(body.get("invalid_params")) if isinstance(p, dict)]
    problems = [f"{p.get('name')}: {p.get('reason')}" for p in params]
    problems += [_fastapi_problem(p) for p in _list(body.get("detail")) if isinstance(p, dict)]
    return "; ".join(filter(None, [message, *problems]))[:1000]


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _fastapi_problem(problem: dict[str, Any]) -> str:
    """`image_url: Input should be a valid URL` from `{"loc": ["body", "image_url"], "msg": ...}`."""
    loc = [str(part) for part in _list(problem.get("loc"))]
    if len(loc) > 1 and loc[0] in _LOCATIONS:
        loc = loc[1:]
    msg = str(problem.get("msg") or "")
    return f"{'.'.join(loc)}: {msg}" if loc else msg
