"""Finalize: a FINALIZING task's outcome is recorded; for a success, the video is stored first.

Runs from the finalize queue, one order per task, whatever found the outcome (a webhook,
the reconciler's poll, a deadline). The order names its task's owner, so only the
current order can end it. Transient failures raise RetryLater: the message comes back
after a backoff, up to `max_attempts` deliveries, then the task FAILS with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from i2v.domain import ErrorInfo, Task, TaskStatus, VideoObject
from i2v.errors import DownloadFailed, PipelineError, ProviderRejected, RetryLater
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.providers.base import Provider, ProviderState
from i2v.storage import video_key_of
from i2v.usecases.outcome import Endings
from i2v.usecases.progress import FinalizeOrder


class FinalizeOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    NOT_OURS = "not_ours"


class StoredVideo(Protocol):
    size: int
    sha256: str
    content_type: str


# (video url, destination key, object metadata) -> what was stored
FetchVideo = Callable[[str, str, dict[str, str], str], StoredVideo]
"""(video URL, object key, object metadata, the task's route) -> the stored video."""

FindStoredVideo = Callable[[str, dict[str, str]], StoredVideo | None]
"""(object key, object metadata) -> the video an earlier try stored there whole, or None."""


@dataclass(frozen=True)
class FinalizeConfig:
    bucket: str
    incoming_prefix: str
    videos_prefix: str
    max_attempts: int


def video_key(task: Task, config: FinalizeConfig) -> str:
    return video_key_of(
        task.source.key,
        task.task_id,
        incoming_prefix=config.incoming_prefix,
        videos_prefix=config.videos_prefix,
    )


@dataclass(frozen=True)
class Finalizer:
    config: FinalizeConfig
    providers: Callable[[str], Provider]
    """Each route's adapter by name: a task is finished by the route that took it."""
    fetch_video: FetchVideo
    stored_video: FindStoredVideo
    endings: Endings
    metrics: MetricsSink
    clock: Callable[[], float] = time.time

    def __call__(self, order: FinalizeOrder, *, attempt: int) -> FinalizeOutcome:
        """Finish `order`'s task; `attempt` counts this message's deliveries (1 = first)."""
        task = order.task
        logger.set_correlation_id(task.task_id)
        if attempt > 1 and (ended := self._ended_by_this_order(task)) is not None:
            return ended
        outcome = task.outcome or TaskStatus.FAILED
        if outcome is not TaskStatus.SUCCEEDED:
            error = task.error or ErrorInfo(code="PROVIDER_FAILED", message="the provider failed the task")
            cancelled = outcome is TaskStatus.TIMED_OUT and self._cancel(task)
            return self._end(task, outcome, error=error, cancelled_at=self.clock() if cancelled else None)
        if task.result_expires_at is not None and self.clock() > task.result_expires_at:
            error = ErrorInfo(
                code="RESULT_EXPIRED",
                message=f"{task.provider.name}'s video expired before it could be downloaded",
            )
            return self._fail(task, error, attempt)
        try:
            url = self._video_url(order, attempt)
            stored = self.fetch_video(url, video_key(task, self.config), _metadata(task), task.provider.name)
        except (DownloadFailed, ProviderRejected, RetryLater) as exc:
            permanent = isinstance(exc, ProviderRejected) or (
                isinstance(exc, DownloadFailed) and exc.permanent
            )
            if permanent or attempt >= self.config.max_attempts:
                logger.warning(
                    "finalization failed for good", extra={"code": exc.code, "reason": exc.message}
                )
                return self._fail(task, ErrorInfo(code=exc.code, message=exc.message), attempt)
            logger.warning(
                "finalization failed; it will be retried",
                extra={"code": exc.code, "reason": exc.message, "attempt": attempt},
            )
            if isinstance(exc, RetryLater):
                raise
            raise RetryLater(exc.message, code=exc.code) from exc
        return self._succeed(task, stored)

    def _succeed(self, task: Task, stored: StoredVideo) -> FinalizeOutcome:
        video = VideoObject(
            bucket=self.config.bucket,
            key=video_key(task, self.config),
            size=stored.size,
            sha256=stored.sha256,
            content_type=stored.content_type,
        )
        ended = self._end(task, TaskStatus.SUCCEEDED, video=video)
        if ended is FinalizeOutcome.SUCCEEDED:
            self.metrics.add_metric(name="BytesDownloaded", unit=MetricUnit.Bytes, value=stored.size)
            if task.submitted_at is not None and task.completed_at is not None:
                self.metrics.add_metric(
                    name="GenerationSeconds",
                    unit=MetricUnit.Seconds,
                    value=task.completed_at - task.submitted_at,
                )
            logger.info("video stored", extra={"video_key": video.key, "size": stored.size})
        return ended

    def _fail(self, task: Task, error: ErrorInfo, attempt: int) -> FinalizeOutcome:
        """End a successful generation FAILED, unless an earlier try of this order stored its
        video whole and died (or its write failed) before recording SUCCEEDED: then it
        succeeds with that video rather than fail with a video in the bucket (found by the
        chaos run). Looked for on redeliveries only: a first try has no earlier one."""
        if attempt > 1:
            stored = self.stored_video(video_key(task, self.config), _metadata(task))
            if stored is not None:
                logger.info("an earlier try stored the video; the task succeeds with it")
                return self._succeed(task, stored)
        return self._end(task, TaskStatus.FAILED, error=error)

    def _ended_by_this_order(self, task: Task) -> FinalizeOutcome | None:
        """On a redelivery, the outcome an earlier try of this order already wrote (its
        process died before the notification), announced again; None if the work is still
        to do. Without this read, the retry would download a video for a task it had
        already ended (found by the chaos run: a FAILED task with a video in the bucket)."""
        current = self.endings.store.get(task.task_id)
        if current is None or not current.status.is_terminal or current.owner != task.owner:
            return None
        logger.info("the task was ended by an earlier try of this order; announcing it again")
        self.endings.announce(current)
        return FinalizeOutcome(current.status.value.lower())

    def _cancel(self, task: Task) -> bool:
        """A task given up as TIMED_OUT is stopped at the provider where the route can, so a
        late generation is not paid for unseen. Best effort: the task times out either way."""
        if task.provider.task_id is None:
            return False
        try:
            cancelled = self.providers(task.provider.name).cancel(
                task.provider.task_id, model=task.options.model
            )
        except PipelineError as exc:
            logger.warning("provider task not cancelled", extra={"code": exc.code, "reason": exc.message})
            return False
        logger.info("provider task cancelled" if cancelled else "provider task could not be cancelled")
        if cancelled:
            self.metrics.add_metric(name="ProviderTasksCancelled", unit=MetricUnit.Count, value=1)
        return cancelled

    def _video_url(self, order: FinalizeOrder, attempt: int) -> str:
        """The webhook's URL on a first try; the provider's current answer after that (a
        signed URL may have expired), or when the completion named no video."""
        if order.video_url and attempt == 1:
            return order.video_url
        provider_task_id = order.task.provider.task_id
        if provider_task_id is None:
            raise RetryLater("the provider's task id is not known yet", code="VIDEO_URL_MISSING")
        update = self.providers(order.task.provider.name).status(
            provider_task_id, model=order.task.options.model
        )
        if update.state is ProviderState.SUCCEEDED and update.video_url:
            return update.video_url
        if update.state is ProviderState.FAILED and update.error is not None:
            raise DownloadFailed(update.error.message, permanent=True, code=update.error.code)
        if order.video_url:
            return order.video_url
        raise RetryLater(
            f"the provider reported completion without a video (status now {update.raw_status})",
            code="VIDEO_URL_MISSING",
        )

    def _end(
        self,
        task: Task,
        status: TaskStatus,
        *,
        error: ErrorInfo | None = None,
        video: VideoObject | None = None,
        cancelled_at: float | None = None,
    ) -> FinalizeOutcome:
        assert task.owner is not None, "a FINALIZING task always has its order as owner"
        fields: dict[str, object] = {}
        if video is not None:
            fields["video"] = video.model_dump(mode="json")
        if cancelled_at is not None:
            fields["cancelled_at"] = cancelled_at
        ended = self.endings.end(task.task_id, status, owner=task.owner, error=error, set_=fields or None)
        if ended is None:
            return FinalizeOutcome.NOT_OURS
        return FinalizeOutcome(status.value.lower())


def _metadata(task: Task) -> dict[str, str]:
    return {"task-id": task.task_id, "source-key": quote(task.source.key)}
