"""Submit: one uploaded object becomes one provider task, or a rejection with its reason."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote_plus

from i2v.domain import (
    ErrorInfo,
    Options,
    ProviderRef,
    SourceObject,
    Task,
    TaskStatus,
    derive_task_id,
)
from i2v.errors import InvalidInput, ProviderRejected, ProviderUnavailable
from i2v.media.image import check_provider_rules, read_image_info
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.options import is_sidecar, resolve_options
from i2v.providers.base import Provider, SubmitRequest
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token, new_token
from i2v.usecases.outcome import finish


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Upload:
    """One S3 ObjectCreated record, key decoded."""

    bucket: str
    key: str
    size: int | None
    version_id: str | None
    sequencer: str | None
    etag: str | None
    event_time: str | None

    @property
    def version(self) -> str:
        # Duplicated deliveries of one event share version id and sequencer. Emulators
        # that send neither fall back to etag + event time, which duplicates share too.
        return self.version_id or self.sequencer or f"{self.etag}@{self.event_time}"


def uploads_in(message: dict[str, Any]) -> Iterator[Upload]:
    """The S3 records in one notification; nothing for `s3:TestEvent`."""
    if message.get("Event") == "s3:TestEvent":
        return
    for record in message.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        obj = s3["object"]
        yield Upload(
            bucket=s3["bucket"]["name"],
            key=unquote_plus(obj["key"]),
            size=obj.get("size"),
            version_id=obj.get("versionId"),
            sequencer=obj.get("sequencer"),
            etag=obj.get("eTag"),
            event_time=record.get("eventTime"),
        )


@dataclass(frozen=True)
class SubmitConfig:
    defaults: Options
    incoming_prefix: str
    webhook_base_url: str
    presign_expiry_seconds: int
    submit_lease_seconds: int = 180  # longer than the submit function may run


def retry_delay(attempt: int, *, base: float, cap: float, retry_after: float | None) -> int:
    """Seconds before the next try: capped exponential backoff with full jitter,
    never sooner than the provider's Retry-After."""
    backoff = min(cap, base * 2 ** max(0, attempt - 1))
    delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
    if retry_after is not None:
        delay = max(delay, retry_after)
    return int(min(cap, max(1.0, delay)))


def submit_upload(
    upload: Upload,
    *,
    config: SubmitConfig,
    store: TaskStore,
    sources: SourceStore,
    provider: Provider,
    notify: Callable[[Task], None],
    metrics: MetricsSink,
    clock: Callable[[], float],
) -> SubmitOutcome:
    """Take one upload to SUBMITTED (or REJECTED / FAILED).

    Raises ProviderUnavailable when the provider cannot take the task now: the caller
    retries later, and the task stays claimable.
    """
    if not upload.key.startswith(config.incoming_prefix) or upload.key.endswith("/"):
        logger.info("not an upload under the incoming prefix, skipped")
        return SubmitOutcome.SKIPPED
    if is_sidecar(upload.key):
        logger.info("options sidecar, skipped")
        return SubmitOutcome.SKIPPED

    task_id = derive_task_id(upload.bucket, upload.key, upload.version)
    logger.set_correlation_id(task_id)
    now = clock()
    task = Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=SourceObject(
            bucket=upload.bucket, key=upload.key, version_id=upload.version_id, size=upload.size
        ),
        provider=ProviderRef(name=provider.name),
        received_at=now,
        updated_at=now,
    )
    lease_until = now + config.submit_lease_seconds
    if not store.create(task, lease_until=lease_until):
        claimed = store.claim_submission(task_id, now=now, lease_until=lease_until)
        if claimed is None:
            logger.info("task already claimed or past submission: duplicate event acknowledged")
            return SubmitOutcome.DUPLICATE
        task = claimed
        logger.info("retrying submission", extra={"attempt": task.submit_attempts})

    try:
        return _submit(task, config, store, sources, provider, metrics, clock)
    except Rejection as rejection:
        exc = rejection.reason
        logger.info("upload rejected", extra={"code": exc.code, "reason": exc.message})
        known = {"source": rejection.source.model_dump(mode="json", exclude_none=True)}
        if rejection.options is not None:
            known["options"] = rejection.options.model_dump(mode="json", exclude_none=True)
        finish(
            task_id,
            TaskStatus.REJECTED,
            [TaskStatus.RECEIVED],
            store=store,
            notify=notify,
            now=clock(),
            error=ErrorInfo(code=exc.code, message=exc.message),
            set_=known,
        )
        metrics.add_metric(name="TasksRejected", unit=MetricUnit.Count, value=1)
        return SubmitOutcome.REJECTED
    except ProviderRejected as exc:
        logger.warning("provider refused the task", extra={"code": exc.code, "reason": exc.message})
        error = ErrorInfo(code=exc.code, message=exc.message)
        finish(
            task_id,
            TaskStatus.FAILED,
            [TaskStatus.RECEIVED],
            store=store,
            notify=notify,
            now=clock(),
            error=error,
        )
        metrics.add_metric(name="TasksFailed", unit=MetricUnit.Count, value=1)
        return SubmitOutcome.FAILED
    except ProviderUnavailable as exc:
        error = ErrorInfo(code=exc.code, message=exc.message)
        store.release_submission(task_id, error=error, now=clock())
        metrics.add_metric(name="ProviderUnavailable", unit=MetricUnit.Count, value=1)
        raise


class Rejection(Exception):
    """An upload that cannot be submitted, with what was learnt about it on the way."""

    def __init__(self, reason: InvalidInput, source: SourceObject, options: Options | None) -> None:
        super().__init__(reason.message)
        self.reason = reason
        self.source = source
        self.options = options


def _inspect(task: Task, config: SubmitConfig, sources: SourceStore) -> tuple[SourceObject, Options]:
    """The upload's facts and options, checked against the provider's rules.

    Options are resolved even when the image is bad, so a rejection reports both; an
    image problem is the reason given first.
    """
    source = task.source
    try:
        head = sources.head(source.key, source.version_id)
    except InvalidInput as exc:
        raise Rejection(exc, source, None) from exc
    source = source.model_copy(
        update={
            "size": head.size,
            "content_type": head.content_type,
            "version_id": source.version_id or head.version_id,
        }
    )
    options: Options | None = None
    options_error: InvalidInput | None = None
    try:
        options = resolve_options(config.defaults, head.metadata, sources.read_sidecar)
    except InvalidInput as exc:
        options_error = exc
    try:
        info = read_image_info(
            lambda start, end: sources.read_range(source.key, start, end, source.version_id), head.size
        )
        source = source.model_copy(
            update={"width": info.width, "height": info.height, "image_format": info.format}
        )
        check_provider_rules(info, head.size)
    except InvalidInput as exc:
        raise Rejection(exc, source, options) from exc
    if options is None:
        assert options_error is not None
        raise Rejection(options_error, source, None)
    return source, options


def _submit(
    task: Task,
    config: SubmitConfig,
    store: TaskStore,
    sources: SourceStore,
    provider: Provider,
    metrics: MetricsSink,
    clock: Callable[[], float],
) -> SubmitOutcome:
    source, options = _inspect(task, config, sources)
    token = new_token()
    prepared = store.prepare_submission(
        task.task_id,
        source=source,
        options=options,
        token_hash=hash_token(token),
        estimated_cost_usd=provider.estimate_cost_usd(options),
        now=clock(),
    )
    if prepared is None:
        logger.info("task left RECEIVED while it was being prepared; nothing to do")
        return SubmitOutcome.DUPLICATE

    webhook_url = None
    if provider.supports_webhooks:
        base = config.webhook_base_url.rstrip("/")
        webhook_url = f"{base}/callbacks/{quote(task.task_id)}?token={token}"
    request = SubmitRequest(
        image_url=sources.presign(
            source.key, expires_in=config.presign_expiry_seconds, version_id=source.version_id
        ),
        options=options,
        webhook_url=webhook_url,
    )
    provider_task_id = provider.submit(request)
    store.mark_submitted(task.task_id, provider_task_id=provider_task_id, now=clock())
    logger.info("submitted", extra={"provider_task_id": provider_task_id})
    metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=1)
    return SubmitOutcome.SUBMITTED
