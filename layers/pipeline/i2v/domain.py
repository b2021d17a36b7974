"""The task and the values around it. Models here do no I/O."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from i2v.attempts import Attempt


class TaskStatus(StrEnum):
    RECEIVED = "RECEIVED"
    DEFERRED = "DEFERRED"
    """Over the day's budget: waits for the next UTC day (`deferred_until`), then goes back
    to RECEIVED and is submitted."""
    UNCONFIRMED = "UNCONFIRMED"
    """Sent to the provider, no answer came: it may or may not have made the task."""
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    FINALIZING = "FINALIZING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


# Which state may follow which is the lifecycle table's business: i2v/tasks/lifecycle.py.
TERMINAL_STATES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED, TaskStatus.TIMED_OUT}
)

Resolution = Literal["720P", "1080P"]
ModelVersion = Literal["1.0", "1.1"]

# One namespace for every task id, so the same upload always maps to the same id.
_TASK_NAMESPACE = uuid.UUID("6f1c3a52-7d0e-4b8a-9a41-2f3e9c1b5d77")


def derive_task_id(bucket: str, key: str, version: str) -> str:
    """The task id of one upload: the same (bucket, key, version) always gives the same id.

    `version` is the S3 version id when the bucket is versioned, else the event's sequencer;
    both are the same in a duplicated delivery of one event and differ between two uploads.
    """
    return str(uuid.uuid5(_TASK_NAMESPACE, f"{bucket}\n{key}\n{version}"))


# defer_build: a model's validator is built on its first use rather than at import, so a
# cold start pays only for the models its path validates (pydantic 2.10+; behaviour is the
# same either way).
class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Options(Frozen):
    """What the user asked for: stack defaults, overridden by metadata, then by a sidecar."""

    # The widest any route takes; each route's own rules are checked before submission.
    prompt: str = Field(default="", max_length=5000)
    resolution: Resolution = "1080P"
    duration: int = Field(default=5, ge=2, le=15)
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    model: ModelVersion | None = None
    """HappyHorse 1.0 or 1.1, on routes that offer both; None is the route's default, 1.0."""
    provider: str | None = Field(default=None, max_length=32)
    """The route the upload asks for; None is the stack's primary route (or its failover)."""


class SourceObject(Frozen):
    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    image_format: str | None = None


class VideoObject(Frozen):
    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str = "video/mp4"


class ErrorInfo(Frozen):
    code: str
    message: str


class ProviderRef(Frozen):
    name: str
    task_id: str | None = None


class Task(BaseModel):
    """One upload's journey, as stored in the task table."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    task_id: str
    status: TaskStatus
    source: SourceObject
    options: Options = Field(default_factory=Options)
    provider: ProviderRef
    token_hash: str | None = None
    owner: str | None = None
    """Who may end the task: the upload message that submits it, then the finalize order."""
    outcome: TaskStatus | None = None
    """While FINALIZING: the terminal state the finalization will record."""
    completed_via: str | None = None
    """How the provider's outcome became known: "callback" or "reconcile"."""
    received_at: float
    submitted_at: float | None = None
    running_at: float | None = None
    completed_at: float | None = None
    finished_at: float | None = None
    updated_at: float
    submit_attempts: int = 0
    lease_until: float | None = None
    result_expires_at: float | None = None
    """When the provider's video will be gone (its route's result lifetime after completion)."""
    cancelled_at: float | None = None
    """When the provider was asked to stop a task given up as TIMED_OUT."""
    video: VideoObject | None = None
    error: ErrorInfo | None = None
    last_error: ErrorInfo | None = None
    estimated_cost_usd: float | None = None
    """The route's price per second times the duration; None for a route with no price."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every submission to a provider and its answer (i2v/attempts.py)."""
    deferred_until: float | None = None
    """While DEFERRED: when the next day's budget opens."""
    resumed_at: float | None = None
    """When a deferred task came back: its deadline counts from then."""
    released: bool = False
    """The last submission was confirmed not taken: a retry may go to another route."""
    notify_pending: bool = False
    """A terminal task whose notification failed: the reconciler sends it again."""
