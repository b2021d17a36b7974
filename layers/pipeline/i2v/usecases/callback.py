"""Callback: a provider's webhook, authenticated twice, then applied to its task."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from i2v.errors import BadCallback, Unauthorized
from i2v.observability import logger
from i2v.providers.base import Provider
from i2v.usecases.progress import Progress, UpdateOutcome, apply_update
from i2v.usecases.submit import hash_token


@dataclass(frozen=True)
class CallbackRequest:
    task_id: str
    token: str
    headers: Mapping[str, str]
    body: bytes


def handle_callback(request: CallbackRequest, *, provider: Provider, progress: Progress) -> UpdateOutcome:
    """Raises Unauthorized (401: unknown task, wrong token or signature) or BadCallback (400).

    Nothing is written before both checks pass. An unknown task answers like a wrong
    token, so the endpoint tells a forger nothing.
    """
    task = progress.store.get(request.task_id)
    expected = task.token_hash if task else None
    presented = hash_token(request.token)
    if task is None or expected is None or not hmac.compare_digest(presented, expected):
        raise Unauthorized("unknown task or wrong callback token")
    logger.set_correlation_id(task.task_id)
    update = provider.parse_callback(request.headers, request.body)
    known_id = task.provider.task_id
    if known_id is not None and update.provider_task_id != known_id:
        raise BadCallback("the webhook is for another provider task")
    logger.info("provider update", extra={"provider_status": update.raw_status})
    return apply_update(task, update, progress)
