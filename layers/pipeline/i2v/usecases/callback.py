"""Callback: a provider's webhook, authenticated twice, then applied to its task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from i2v.domain import Task
from i2v.errors import BadCallback, Unauthorized
from i2v.observability import logger
from i2v.providers.base import Provider
from i2v.tasks.store import TaskStore
from i2v.tokens import token_matches
from i2v.usecases.progress import Progress, UpdateOutcome, apply_update


@dataclass(frozen=True)
class CallbackRequest:
    task_id: str
    token: str
    headers: Mapping[str, str]
    body: bytes


def authenticate(request: CallbackRequest, store: TaskStore) -> Task:
    """The task a callback's token opens; Unauthorized (401) otherwise.

    Needs only the table, so a forged request costs one read and nothing else. An
    unknown task answers like a wrong token: the endpoint tells a forger nothing.
    """
    task = store.get(request.task_id)
    if task is None or not token_matches(request.token, task.token_hash):
        raise Unauthorized("unknown task or wrong callback token")
    logger.set_correlation_id(task.task_id)
    return task


def apply_callback(
    task: Task, request: CallbackRequest, *, provider: Provider, progress: Progress
) -> UpdateOutcome:
    """Verify the provider's signature, then apply its update. Nothing is written before.

    Raises Unauthorized (bad signature) or BadCallback (400: unreadable, or another task's).
    """
    update = provider.parse_callback(request.headers, request.body)
    known_id = task.provider.task_id
    if known_id is not None and update.provider_task_id != known_id:
        raise BadCallback("the webhook is for another provider task")
    logger.info("provider update", extra={"provider_status": update.raw_status})
    return apply_update(task, update, progress)
