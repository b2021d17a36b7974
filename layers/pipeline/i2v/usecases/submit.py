"""Submit: one uploaded object becomes one provider task, or a rejection with its reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote_plus

from i2v.attempts import Attempt, AttemptError, AttemptOutcome
from i2v.budget import Budget, OverBudget, Reservation
from i2v.domain import (
    ErrorInfo,
    Options,
    ProviderRef,
    SourceObject,
    Task,
    TaskStatus,
    derive_task_id,
)
from i2v.errors import (
    InvalidInput,
    PipelineError,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)
from i2v.media.image import ImageInfo, read_image_info, verify_image
from i2v.observability import MetricsSink, MetricUnit, logger
from i2v.options import is_sidecar, resolve_options
from i2v.providers.base import Provider, SubmitRequest
from i2v.providers.route import RouteSettings
from i2v.storage import SourceStore, video_key_of
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token, new_token
from i2v.usecases.outcome import Endings

if TYPE_CHECKING:
    from i2v.usecases.poll import PollOrder  # loaded when a polling route first needs it


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    UNCONFIRMED = "unconfirmed"


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


@dataclass(frozen=True)
class Resume:
    """A deferred task whose day has come, sent back to the uploads queue by the reconciler."""

    task_id: str

    def message(self) -> dict[str, Any]:
        return {"resume": {"task_id": self.task_id}}


def uploads_in(message: dict[str, Any]) -> Iterator[Upload | Resume]:
    """The S3 records in one notification (nothing for `s3:TestEvent`), or the deferred
    task a reconciler's message resumes."""
    if message.get("Event") == "s3:TestEvent":
        return
    if "resume" in message:
        yield Resume(task_id=str(message["resume"]["task_id"]))
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
class ChosenRoute:
    provider: Provider
    settings: RouteSettings

    @property
    def name(self) -> str:
        return self.provider.name


class Routing(Protocol):
    """The stack's routes (i2v/routing.py holds the breaker behind them)."""

    def choose(self, requested: str | None) -> ChosenRoute:
        """The route a new task goes to: the one asked for, else the first whose breaker
        is closed. Raises InvalidOptions for a route this stack has not configured."""
        ...

    def named(self, name: str) -> ChosenRoute:
        """Route `name`, configured or not any more: a task stays where it was taken."""
        ...

    def failed(self, name: str) -> None:
        """A failure to create a task on `name`: it counts toward the route's breaker."""
        ...


@dataclass(frozen=True)
class SubmitConfig:
    defaults: Options
    incoming_prefix: str
    webhook_base_url: str
    presign_expiry_seconds: int
    submit_lease_seconds: int = 180  # longer than the submit function may run
    videos_prefix: str = "videos/"


@dataclass(frozen=True)
class _Steps:
    """What every step of one submission works with, bound once per message."""

    config: SubmitConfig
    store: TaskStore
    sources: SourceStore
    routing: Routing
    endings: Endings
    metrics: MetricsSink
    clock: Callable[[], float]
    guard: _Guard
    first_poll: Callable[[PollOrder], None]


def submit_upload(
    upload: Upload | Resume,
    *,
    owner: str,
    config: SubmitConfig,
    store: TaskStore,
    sources: SourceStore,
    routing: Routing,
    endings: Endings,
    metrics: MetricsSink,
    clock: Callable[[], float],
    budget: Budget | None = None,
    first_poll: Callable[[PollOrder], None] = lambda order: None,
) -> SubmitOutcome:
    """Take one upload to SUBMITTED (or REJECTED / FAILED / DEFERRED). `owner` is the queue message.

    Two writes on the way: the claim, which already holds the image's facts, the options,
    the route, its cost estimate and the callback token's hash (a fast provider may call
    back at once), then the provider's task id. An image or option the route cannot take
    is rejected before any paid call. With a daily budget, its reservation is a third
    write, just before the paid call (i2v/budget.py). A polling route's task gets its
    first status check scheduled (`first_poll`). Raises ProviderUnavailable when the
    provider cannot take the task now: the message comes back later, and the task stays
    claimable.
    """
    steps = _Steps(
        config,
        store,
        sources,
        routing,
        endings,
        metrics,
        clock,
        _Guard(budget, store, endings, metrics, clock),
        first_poll,
    )
    if isinstance(upload, Resume):
        return _resume(upload, owner, steps)
    if not upload.key.startswith(config.incoming_prefix) or upload.key.endswith("/"):
        logger.info("not an upload under the incoming prefix, skipped")
        return SubmitOutcome.SKIPPED
    if is_sidecar(upload.key):
        logger.info("options sidecar, skipped")
        return SubmitOutcome.SKIPPED

    task_id = derive_task_id(upload.bucket, upload.key, upload.version)
    logger.set_correlation_id(task_id)
    source = SourceObject(
        bucket=upload.bucket, key=upload.key, version_id=upload.version_id, size=upload.size
    )
    rejection: Rejection | None = None
    route: ChosenRoute | None = None
    try:
        _check_video_key(source, task_id, config)
        source, options = _inspect(source, config, sources)
        route = _route_for(source, options, routing, sources)
    except Rejection as rejected:
        rejection = rejected
        source, options = rejected.source, rejected.options or config.defaults
        route = rejected.route or _route_or_none(routing, options)

    token = new_token()
    now = clock()
    task = Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=source,
        options=options,
        provider=ProviderRef(name=route.name if route else (options.provider or _REJECTED_ROUTE)),
        token_hash=hash_token(token),
        owner=owner,
        # Rejected ones too: their notification says what the route would have charged.
        estimated_cost_usd=route.settings.estimate_cost_usd(options) if route else None,
        received_at=now,
        updated_at=now,
    )
    claim = _claim(task, route, steps)
    if claim is None:
        return SubmitOutcome.DUPLICATE
    claimed, route = claim

    if rejection is not None:
        exc = rejection.reason
        logger.info("upload rejected", extra={"code": exc.code, "reason": exc.message})
        endings.end(task_id, TaskStatus.REJECTED, owner=owner, error=_error(exc))
        return SubmitOutcome.REJECTED
    assert route is not None
    return _submit(claimed, route, token, owner, steps)


def _resume(resume: Resume, owner: str, steps: _Steps) -> SubmitOutcome:
    """A deferred task, due: claimed back to RECEIVED for this message and submitted where
    it was to go (its image and options were checked when it was uploaded)."""
    logger.set_correlation_id(resume.task_id)
    token = new_token()
    now = steps.clock()
    lease_until = now + steps.config.submit_lease_seconds
    written = steps.store.resume_deferred(
        resume.task_id, owner=owner, token_hash=hash_token(token), now=now, lease_until=lease_until
    )
    claimed = written.task
    if claimed is None and written.before is not None and written.before.status is TaskStatus.RECEIVED:
        # An earlier try of a resume claimed it and died before the provider's answer.
        claimed = steps.store.claim_submission(
            resume.task_id,
            owner=owner,
            token_hash=hash_token(token),
            now=now,
            lease_until=lease_until,
            route=written.before.provider.name,
            estimated_cost_usd=written.before.estimated_cost_usd,
        )
    if claimed is None:
        logger.info("deferred task not due, or already resumed: message acknowledged")
        return SubmitOutcome.DUPLICATE
    logger.info("deferred task resumed")
    return _submit(claimed, steps.routing.named(claimed.provider.name), token, owner, steps)


def _submit(claimed: Task, route: ChosenRoute, token: str, owner: str, steps: _Steps) -> SubmitOutcome:
    """The budget's reservation, the paid call, and what its answer means for the task
    (and for the attempt recorded with it)."""
    task_id = claimed.task_id
    provider = route.provider
    try:
        reservation = steps.guard.reserve(claimed)
    except OverBudget as exc:
        return steps.guard.over_budget(claimed, exc, owner)
    started_at = steps.clock()
    estimate = claimed.estimated_cost_usd

    def attempt(outcome: AttemptOutcome, exc: PipelineError | None = None, **fields: Any) -> Attempt:
        error = AttemptError(code=exc.code, message=exc.message) if exc else None
        charge = estimate if outcome in (AttemptOutcome.ACCEPTED, AttemptOutcome.UNCONFIRMED) else 0.0
        return Attempt(
            route=provider.name,
            started_at=started_at,
            outcome=outcome,
            error=error,
            estimated_charge_usd=charge,
            **fields,
        )

    try:
        provider_task_id = provider.submit(_request(claimed, token, steps.config, steps.sources, provider))
    except ProviderRejected as exc:
        logger.warning("provider refused the task", extra={"code": exc.code, "reason": exc.message})
        steps.guard.refund(reservation)
        refused = attempt(AttemptOutcome.REFUSED, exc, ended_at=steps.clock())
        steps.endings.end(task_id, TaskStatus.FAILED, owner=owner, error=_error(exc), attempt=refused)
        return SubmitOutcome.FAILED
    except ProviderOutcomeUnknown as exc:
        # The provider may have made the task: never submitted again, never moved to
        # another route. Its webhook (or the reconciler, after the hold) settles it. Its
        # reservation stays: it may be billed. The hold is written before the breaker's
        # count: if that write failed first, the redelivery would find the task unheld and
        # submit it again.
        now = steps.clock()
        held = attempt(AttemptOutcome.UNCONFIRMED, exc)
        steps.store.hold_unconfirmed(task_id, error=_error(exc).model_dump(), now=now, attempt=held)
        steps.routing.failed(provider.name)
        logger.warning("submission outcome unknown; task held", extra={"reason": exc.message})
        steps.metrics.add_metric(name="SubmissionsUnconfirmed", unit=MetricUnit.Count, value=1)
        return SubmitOutcome.UNCONFIRMED
    except ProviderUnavailable as exc:
        steps.routing.failed(provider.name)
        # Given back before the retry reserves again, so the task is counted once.
        steps.guard.refund(reservation)
        now = steps.clock()
        unavailable = attempt(AttemptOutcome.UNAVAILABLE, exc, ended_at=now)
        steps.store.release_submission(
            task_id, owner=owner, error=_error(exc).model_dump(), now=now, attempt=unavailable
        )
        steps.metrics.add_metric(name="ProviderUnavailable", unit=MetricUnit.Count, value=1)
        raise
    submitted_at = steps.clock()
    accepted = attempt(AttemptOutcome.ACCEPTED, provider_task_id=provider_task_id)
    steps.store.mark_submitted(task_id, provider_task_id=provider_task_id, now=submitted_at, attempt=accepted)
    logger.info("submitted", extra={"provider_task_id": provider_task_id, "route": provider.name})
    steps.metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=1)
    if estimate is not None:
        steps.metrics.add_metric(name="EstimatedCostUsd", unit=MetricUnit.Count, value=estimate)
    if not provider.supports_webhooks:
        from i2v.usecases.poll import PollOrder

        _schedule_first_poll(
            PollOrder(
                task_id=task_id,
                route=provider.name,
                provider_task_id=provider_task_id,
                model=claimed.options.model,
                submitted_at=submitted_at,
            ),
            steps.first_poll,
            steps.metrics,
        )
    return SubmitOutcome.SUBMITTED


@dataclass(frozen=True)
class _Guard:
    """The daily budget around one submission: off (no call) when there is no budget."""

    budget: Budget | None
    store: TaskStore
    endings: Endings
    metrics: MetricsSink
    clock: Callable[[], float]

    def reserve(self, task: Task) -> Reservation | None:
        if self.budget is None:
            return None
        if task.estimated_cost_usd is None and self.budget.config.enabled:
            logger.info("the route has no price: the task is not counted against the budget")
        reservation = self.budget.reserve(task.estimated_cost_usd, now=self.clock())
        if reservation is not None:
            self.metrics.add_metric(
                name="BudgetSpentTodayUsd", unit=MetricUnit.Count, value=reservation.spent_usd
            )
        return reservation

    def refund(self, reservation: Reservation | None) -> None:
        if self.budget is not None:
            self.budget.refund(reservation)

    def over_budget(self, task: Task, exc: OverBudget, owner: str) -> SubmitOutcome:
        """Reject the task, or park it until the budget resets (OverBudgetAction)."""
        assert self.budget is not None
        logger.warning("over the daily budget", extra={"reason": exc.message})
        if self.budget.config.over_budget == "reject":
            self.endings.end(task.task_id, TaskStatus.REJECTED, owner=owner, error=_error(exc))
            return SubmitOutcome.REJECTED
        written = self.store.defer(
            task.task_id,
            owner=owner,
            until=exc.resets_at.timestamp(),
            now=self.clock(),
            error=_error(exc).model_dump(),
        )
        if written.task is None:
            logger.info("task not deferred: no longer this message's to submit")
            return SubmitOutcome.DUPLICATE
        self.endings.announce_deferral(written.task)
        return SubmitOutcome.DEFERRED


# The route recorded on a task rejected before any route could take it (an upload that
# names no configured route, say): no provider is ever asked about it.
_REJECTED_ROUTE = "none"


def _route_or_none(routing: Routing, options: Options) -> ChosenRoute | None:
    """The route a rejected upload would have gone to, so its record and notification say
    whose rules it was judged by; None when it named a route this stack does not have."""
    try:
        return routing.choose(options.provider)
    except InvalidInput:
        return None


def _schedule_first_poll(
    order: PollOrder, first_poll: Callable[[PollOrder], None], metrics: MetricsSink
) -> None:
    try:
        first_poll(order)
    except Exception:
        # The task is submitted and recorded: the reconciler polls it if no chain does.
        logger.exception("first status check not scheduled; the reconciler will poll the task")
        metrics.add_metric(name="PollNotScheduled", unit=MetricUnit.Count, value=1)


def _route_for(source: SourceObject, options: Options, routing: Routing, sources: SourceStore) -> ChosenRoute:
    """The route that takes the upload, once its rules accept the image and the options.

    The whole file is read only for an image whose head the route's rules accept.
    """
    try:
        route = routing.choose(options.provider)
    except InvalidInput as exc:
        raise Rejection(exc, source, options) from exc
    try:
        assert source.width is not None and source.height is not None and source.image_format is not None
        route.settings.check_image(source.image_format, source.width, source.height, source.size or 0)
        verify_image(
            lambda start, end: sources.read_range(source.key, start, end, source.version_id),
            source.size or 0,
            ImageInfo.model_validate(
                {"format": source.image_format, "width": source.width, "height": source.height}
            ),
        )
        route.settings.check_options(options, route=route.name)
    except InvalidInput as exc:
        raise Rejection(exc, source, options, route=route) from exc
    return route


def _claim(task: Task, route: ChosenRoute | None, steps: _Steps) -> tuple[Task, ChosenRoute | None] | None:
    """The task, claimed for this message, and the route to submit it to; None when
    another message has it or had it.

    A retry moves to the route chosen now (the breaker may have sent new tasks elsewhere)
    only when its last attempt was a confirmed failure to create it (`released`); any
    other earlier attempt may have made a task, so the retry stays where that one went.
    """
    lease_until = task.received_at + steps.config.submit_lease_seconds
    created = steps.store.create(task, lease_until=lease_until)
    if created.task is not None:
        return created.task, route
    existing = created.before
    if existing is not None and existing.status.is_terminal and existing.owner == task.owner:
        # This message ended the task before its process died: the notification may not be out.
        steps.endings.announce(existing)
        return None
    if (
        existing is not None
        and route is not None
        and not (existing.released and existing.provider.name != route.name)
    ):
        route = steps.routing.named(existing.provider.name)
    assert task.owner is not None and task.token_hash is not None
    claimed = steps.store.claim_submission(
        task.task_id,
        owner=task.owner,
        token_hash=task.token_hash,
        now=steps.clock(),
        lease_until=lease_until,
        route=route.name if route else task.provider.name,
        estimated_cost_usd=route.settings.estimate_cost_usd(task.options) if route else None,
    )
    if claimed is None:
        logger.info("task already claimed or past submission: duplicate event acknowledged")
        return None
    logger.info(
        "retrying submission", extra={"attempt": claimed.submit_attempts, "route": claimed.provider.name}
    )
    return claimed, route


def _request(
    task: Task, token: str, config: SubmitConfig, sources: SourceStore, provider: Provider
) -> SubmitRequest:
    webhook_url = None
    if provider.supports_webhooks:
        base = config.webhook_base_url.rstrip("/")
        webhook_url = f"{base}/callbacks/{quote(provider.name)}/{quote(task.task_id)}?token={token}"
    source = task.source
    return SubmitRequest(
        image_url=sources.presign(
            source.key, expires_in=config.presign_expiry_seconds, version_id=source.version_id
        ),
        options=task.options,
        webhook_url=webhook_url,
    )


def _error(exc: PipelineError) -> ErrorInfo:
    return ErrorInfo(code=exc.code, message=exc.message)


class Rejection(Exception):
    """An upload that cannot be submitted, with what was learnt about it on the way."""

    def __init__(
        self,
        reason: InvalidInput,
        source: SourceObject,
        options: Options | None,
        route: ChosenRoute | None = None,
    ) -> None:
        super().__init__(reason.message)
        self.reason = reason
        self.source = source
        self.options = options
        self.route = route
        """The route whose rules refused the upload, when one was chosen."""


# S3's longest key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


def _check_video_key(source: SourceObject, task_id: str, config: SubmitConfig) -> None:
    """Reject an upload whose video could not be stored: its key, longer than the upload's
    by the task id, would pass S3's limit only after the generation was paid for."""
    key = video_key_of(
        source.key, task_id, incoming_prefix=config.incoming_prefix, videos_prefix=config.videos_prefix
    )
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        excess = size - MAX_KEY_BYTES
        reason = InvalidInput(
            f"the upload's key is too long: its video's key would be {size} bytes, over S3's"
            f" {MAX_KEY_BYTES}; shorten the key by {excess} bytes or more",
            code="KEY_TOO_LONG",
        )
        raise Rejection(reason, source, None)


def _inspect(
    source: SourceObject, config: SubmitConfig, sources: SourceStore
) -> tuple[SourceObject, Options]:
    """The upload's facts and options (the route's rules are checked next).

    Options are resolved even when the image is bad, so a rejection reports both; an
    image problem is the reason given first.
    """
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
    except InvalidInput as exc:
        raise Rejection(exc, source, options) from exc
    if options is None:
        assert options_error is not None
        raise Rejection(options_error, source, None)
    return source, options
