"""Callback: a provider's webhook, verified, recorded with one conditional write, answered.

The signature is checked first (no table access for a forged body); the token is checked
inside the write that applies the update, so an authentic callback costs one write and
no read. A finished task's video is downloaded from the finalize queue, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from i2v.errors import Unauthorized
from i2v.observability import logger
from i2v.providers.base import Provider
from i2v.tokens import hash_token
from i2v.usecases.progress import Progress, UpdateOutcome, apply_update


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
    """Raises Unauthorized (an unknown route, a bad signature, an unknown task, a wrong
    token, a task on another route) or BadCallback (an authentic body that cannot be read,
    or one about another provider task)."""
    from i2v.providers import UnknownRoute

    try:
        provider = providers(request.route)
    except UnknownRoute as exc:
        raise Unauthorized(exc.message) from exc
    update = provider.parse_callback(request.headers, request.body)
    logger.info("provider update", extra={"provider_status": update.raw_status})
    return apply_update(
        request.task_id,
        update,
        progress,
        via="callback",
        token_hash=hash_token(request.token),
        route=request.route,
    )
