"""A simulated task: its neutral states, what the core needs of a route's request, and the
ways a task's work ends early."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from local.render import Resolution


class State(StrEnum):
    """A task's place in its lifecycle; each wire module names these its own way."""

    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED})


class TaskRequest(Protocol):
    """What the core needs of a route's parsed create request (a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def image_url(self) -> str: ...

    @property
    def resolution(self) -> Resolution: ...

    @property
    def duration(self) -> int: ...

    @property
    def webhook_url(self) -> str | None: ...


R = TypeVar("R", bound=TaskRequest)


@dataclass(frozen=True)
class ImageToVideoRequest:
    """The HappyHorse parameters every route's create call carries, with their usual
    defaults; a route's request adds its own fields and `webhook_url` after these."""

    image_url: str
    prompt: str = ""
    resolution: Resolution = "1080P"
    duration: int = 5
    seed: int | None = None


@dataclass
class SimTask(Generic[R]):
    task_id: str
    model: str
    request: R
    created_at: float
    state: State = State.CREATED
    video_url: str | None = None
    failure_reason: str | None = None
    drop_webhooks: bool = False
    forced_failure: bool = False
    # Seeded faults (core/chaos.py): the progress webhook held until the completion's is
    # out, and a signed webhook for a task the pipeline never made, sent with the last one.
    reorder_webhooks: bool = False
    held_webhook: Any = None
    unknown_task_webhook: bool = False
    # When each state was reached (time.time()); set by the core, read by task bodies.
    times: dict[State, float] = field(default_factory=dict)


class TaskFailed(Exception):
    """The task ends FAILED; the message is the reason kept in the simulator's state.

    Reasons about the image start with "image" (the core's and the routes' own), those
    about its fetch with "image could not be fetched": `failure_cause()` reads them."""


class TaskAbandoned(Exception):
    """The task is no longer stored (forgotten, reset, or replaced by a route's cancel) or
    the simulator stops: its worker stops quietly."""


class FailureCause(StrEnum):
    """What ended a failed task, for a route that names it on the wire."""

    IMAGE_FETCH = "image_fetch"
    IMAGE = "image"
    OTHER = "other"  # fault injection, or an error in the simulator


def failure_cause(reason: str) -> FailureCause:
    """The cause of a failed task, read from its `TaskFailed` reason."""
    if reason.startswith("image could not be fetched"):
        return FailureCause.IMAGE_FETCH
    if reason.startswith("image"):
        return FailureCause.IMAGE
    return FailureCause.OTHER


def pause(stopping: threading.Event, seconds: float) -> None:
    """Wait `seconds`; TaskAbandoned as soon as `stopping` is set."""
    if seconds > 0 and stopping.wait(seconds):
        raise TaskAbandoned
