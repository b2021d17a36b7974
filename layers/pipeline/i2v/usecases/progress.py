"""What a provider update does to a task: the callback and the reconciler share this code."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from i2v.domain import AWAITING_PROVIDER, ErrorInfo, Task, TaskStatus, VideoObject
from i2v.errors import DownloadFailed
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import announce, finish

# Before the provider's id is recorded, a fast provider may already report progress.
_BEFORE_RESULT = frozenset({TaskStatus.RECEIVED, *AWAITING_PROVIDER})


class UpdateOutcome(StrEnum):
    UNCHANGED = "unchanged"
    RUNNING = "running"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    RETRY_LATER = "retry_later"


class StoredVideo(Protocol):
    size: int
    sha256: str
    content_type: str


# (video url, destination key, object metadata) -> what was stored
FetchVideo = Callable[[str, str, dict[str, str]], StoredVideo]


@dataclass(frozen=True)
class FinalizeConfig:
    bucket: str
    incoming_prefix: str
    videos_prefix: str
    lease_seconds: int
    max_attempts: int


def video_key(task: Task, config: FinalizeConfig) -> str:
    """`videos/<the source's path under incoming/, without extension>/<task id>.mp4`:
    grouped by source, and never overwriting another task's video."""
    relative = task.source.key.removeprefix(config.incoming_prefix)
    stem = posixpath.splitext(relative)[0] or "video"
    return f"{config.videos_prefix}{stem}/{task.task_id}.mp4"


@dataclass(frozen=True)
class Progress:
    """What applying a provider update needs; the callback and the reconciler share it."""

    config: FinalizeConfig
    store: TaskStore
    fetch_video: FetchVideo
    notify: Callable[[Task], None]
    metrics: MetricsSink
    clock: Callable[[], float]
    owner: str  # who holds a finalization lease: the Lambda request id

    def end(
        self, task_id: str, status: TaskStatus, allowed_from: Iterable[TaskStatus], error: ErrorInfo
    ) -> bool:
        """A terminal transition with its notification and metric; False if not allowed."""
        ended = finish(
            task_id, status, allowed_from, store=self.store, notify=self.notify, now=self.clock(), error=error
        )
        if ended:
            self.metrics.add_metric(name=_OUTCOME_METRICS[status], unit=MetricUnit.Count, value=1)
        return ended is not None


_OUTCOME_METRICS = {TaskStatus.FAILED: "TasksFailed", TaskStatus.TIMED_OUT: "TasksTimedOut"}


def apply_update(task: Task, update: ProviderUpdate, progress: Progress) -> UpdateOutcome:
    if update.state is ProviderState.RUNNING:
        moved = progress.store.transition(
            task.task_id,
            TaskStatus.RUNNING,
            allowed_from=[TaskStatus.RECEIVED, TaskStatus.SUBMITTED],
            now=progress.clock(),
        )
        return UpdateOutcome.RUNNING if moved else UpdateOutcome.UNCHANGED
    if update.state is ProviderState.FAILED:
        error = update.error or ErrorInfo(code="PROVIDER_FAILED", message=update.raw_status)
        ended = progress.end(task.task_id, TaskStatus.FAILED, _BEFORE_RESULT, error)
        return UpdateOutcome.FAILED if ended else UpdateOutcome.UNCHANGED
    if update.state is ProviderState.SUCCEEDED:
        return finalize(task, update, progress)
    return UpdateOutcome.UNCHANGED


def finalize(task: Task, update: ProviderUpdate, progress: Progress) -> UpdateOutcome:
    """Claim the finalization lease, stream the video into S3, then SUCCEEDED and notify."""
    store, config, owner = progress.store, progress.config, progress.owner
    claimed = store.claim_finalization(
        task.task_id, owner=owner, now=progress.clock(), lease_seconds=config.lease_seconds
    )
    if claimed is None:
        logger.info("finalization already done or under way elsewhere")
        return UpdateOutcome.UNCHANGED
    key = video_key(claimed, config)
    try:
        if not update.video_url:
            raise DownloadFailed(
                "the provider reported completion without a video URL",
                permanent=False,
                code="VIDEO_URL_MISSING",
            )
        metadata = {"task-id": claimed.task_id, "source-key": quote(claimed.source.key)}
        stored = progress.fetch_video(update.video_url, key, metadata)
    except DownloadFailed as exc:
        return _download_failed(claimed, exc, progress)

    video = VideoObject(
        bucket=config.bucket,
        key=key,
        size=stored.size,
        sha256=stored.sha256,
        content_type=stored.content_type,
    )
    done = store.complete(claimed.task_id, owner=owner, video=video, now=progress.clock())
    if done is None:
        logger.warning("lease lost before the task could be completed; the holder will finish it")
        return UpdateOutcome.UNCHANGED
    announce(done, store=store, notify=progress.notify, now=progress.clock())
    metrics = progress.metrics
    metrics.add_metric(name="TasksSucceeded", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="BytesDownloaded", unit=MetricUnit.Bytes, value=stored.size)
    if done.submitted_at is not None and done.completed_at is not None:
        metrics.add_metric(
            name="GenerationSeconds", unit=MetricUnit.Seconds, value=done.completed_at - done.submitted_at
        )
    logger.info("video stored", extra={"video_key": key, "size": stored.size})
    return UpdateOutcome.SUCCEEDED


def _download_failed(task: Task, exc: DownloadFailed, progress: Progress) -> UpdateOutcome:
    error = ErrorInfo(code=exc.code, message=exc.message)
    if exc.permanent or task.finalize_attempts >= progress.config.max_attempts:
        logger.warning("video download failed for good", extra={"code": exc.code, "reason": exc.message})
        ended = progress.end(task.task_id, TaskStatus.FAILED, [TaskStatus.FINALIZING], error)
        return UpdateOutcome.FAILED if ended else UpdateOutcome.UNCHANGED
    logger.warning(
        "video download failed; the task stays recoverable",
        extra={"code": exc.code, "reason": exc.message, "attempt": task.finalize_attempts},
    )
    progress.store.release_finalization(task.task_id, owner=progress.owner, error=error, now=progress.clock())
    return UpdateOutcome.RETRY_LATER
