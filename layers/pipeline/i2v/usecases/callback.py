"""Callback: a provider's webhook, verified, recorded with one conditional write, answered.

The signature is checked first (no table access for a forged body); the token is checked
inside the write that applies the update, so an authentic callback costs one write and
no read. A finished task's video is downloaded from the finalize queue, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from i2v.errors import BadCallback, Unauthorized
from i2v.observability import logger
from i2v.providers.base import Provider
from i2v.tokens import hash_token
from i2v.usecases.progress import Progress, UpdateOutcome, apply_update

# DynamoDB's longest partition key, in UTF-8 bytes.
MAX_KEY_BYTES = 2048
# Far above any route's webhook (a task object, a result with one video URL), far below
# Lambda's 6 MB: nothing larger is hashed or parsed.
MAX_CALLBACK_BYTES = 1024 * 1024


class CallbackTooLarge(BadCallback):
    code = "CALLBACK_TOO_LARGE"


@dataclass(frozen=True)
class CallbackRequest:
    route: str
    """The route the callback URL names: its adapter verifies the signature."""
    task_id: str
    token: str
    headers: Mapping[str, str]
    body: bytes


def receive_callback(
    request: CallbackRequest, *, providers: Callable[[str], Provider], progress: Progress
) -> UpdateOutcome:
    """Raises CallbackTooLarge (a body over MAX_CALLBACK_BYTES), Unauthorized (an unknown
    route, a path that names no task id, a bad signature, an unknown task, a wrong token, a
    task on another route) or BadCallback (an authentic body that cannot be read, or one
    about another provider task)."""
    from i2v.providers import UnknownRoute

    if len(request.body) > MAX_CALLBACK_BYTES:
        raise CallbackTooLarge(f"the webhook body is over {MAX_CALLBACK_BYTES} bytes")
    if not _is_task_key(request.task_id):
        raise Unauthorized("the callback URL names no task id")
    try:
        provider = providers(request.route)
    except UnknownRoute as exc:
        raise Unauthorized(exc.message) from exc
    try:
        update = provider.parse_callback(request.headers, request.body)
    except RecursionError as exc:  # json.loads past the interpreter's depth, on any route
        raise BadCallback("webhook body is nested too deep to read") from exc
    logger.info("provider update", extra={"provider_status": update.raw_status})
    return apply_update(
        request.task_id,
        update,
        progress,
        via="callback",
        token_hash=hash_token(request.token),
        route=request.route,
    )


def _is_task_key(value: str) -> bool:
    """Whether DynamoDB would take `value` as the task's key: a longer one is a
    ValidationException (a 500), not the 401 every unknown task gets."""
    try:
        return 0 < len(value.encode("utf-8")) <= MAX_KEY_BYTES
    except UnicodeEncodeError:  # a lone surrogate, which no request can carry
        return False
