"""The composition root: each handler's use case with its real collaborators bound,
built from the settings once per process, on first use.

Handlers call one function from here and map what it returns or raises to their
answer (HTTP status, SQS batch failures and retries). Tests build the use cases'
collaborators themselves (fakes, or moto-backed real ones).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING

from i2v.aws import client
from i2v.config import settings
from i2v.secrets import get_previous_secret, get_secret
from i2v.tasks.store import TaskStore

if TYPE_CHECKING:
    import httpx

    from i2v.budget import Budget
    from i2v.domain import Task
    from i2v.notify import SnsNotifier
    from i2v.providers.base import Provider
    from i2v.providers.route import RouteSettings
    from i2v.redelivery import Redelivery
    from i2v.routing import RouteChoice
    from i2v.storage import SourceStore
    from i2v.usecases.audit import AuditReport
    from i2v.usecases.callback import CallbackRequest
    from i2v.usecases.finalize import FetchVideo, Finalizer, FindStoredVideo, StoredVideo
    from i2v.usecases.outcome import Endings
    from i2v.usecases.poll import Poller, PollOrder
    from i2v.usecases.progress import FinalizeOrder, Progress, UpdateOutcome
    from i2v.usecases.submit import ChosenRoute, Resume, SubmitOutcome, Upload


class SecretCredentials:
    """One route's secrets, read on first use, so each function reads only what it needs."""

    # A signature that matches no secret held makes the store be read again at most this
    # often per process: forged webhooks cannot turn into a read each.
    ROTATION_CHECK_SECONDS = 60.0

    def __init__(self, route: RouteSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._route = route
        self._clock = clock
        self._rotation_checked_at: float | None = None
        self._rotated: tuple[str, ...] = ()

    def _get(self, name: str, what: str) -> str:
        if not name:
            raise RuntimeError(f"this route has no {what} secret")
        config = settings()
        return get_secret(name, store=config.secret_store, max_age=config.secret_cache_seconds)

    def api_key(self) -> str:
        return self._get(self._route.api_key_secret_name, "API key")

    def webhook_secret(self) -> str:
        return self._get(self._route.webhook_secret_name, "webhook")

    def rotated_webhook_secrets(self) -> tuple[str, ...]:
        """The webhook secrets a rotation may have brought: the value stored now (the cached
        one may be older) and the one it replaced (webhooks signed before the rotation)."""
        now = self._clock()
        last = self._rotation_checked_at
        if last is None or now - last >= self.ROTATION_CHECK_SECONDS:
            self._rotation_checked_at = now
            name = self._route.webhook_secret_name
            config = settings()
            current = get_secret(
                name, store=config.secret_store, max_age=config.secret_cache_seconds, force_fetch=True
            )
            previous = get_previous_secret(name, store=config.secret_store)
            self._rotated = tuple(s for s in (current, previous) if s is not None)
        return self._rotated


# -- collaborators ------------------------------------------------------------------------


@cache
def task_store() -> TaskStore:
    config = settings()
    return TaskStore(client("dynamodb"), config.table_name, retention_days=config.retention_days)


@cache
def source_store() -> SourceStore:
    from i2v.storage import SourceStore

    config = settings()
    return SourceStore(client("s3"), bucket=config.bucket_name, incoming_prefix=config.incoming_prefix)


@cache
def notifier() -> SnsNotifier:
    from i2v.notify import SnsNotifier

    config = settings()
    if not config.event_bus_name:  # no bus: no EventBridge client, no call
        return SnsNotifier(client("sns"), config.topic_arn)
    return SnsNotifier(
        client("sns"), config.topic_arn, events_client=client("events"), event_bus=config.event_bus_name
    )


@cache
def route_settings(name: str) -> RouteSettings:
    """Route `name`'s settings, from its environment prefix and ROUTE_SETTINGS."""
    from i2v.providers import route_entry

    return route_entry(name).load_settings(os.environ)


@cache
def provider(name: str) -> Provider:
    """Route `name`'s adapter, made once per process. Any route a task names is served,
    configured or not any more: a task in flight finishes where it started."""
    from i2v.providers import route_entry

    config = route_settings(name)

    @cache
    def http() -> httpx.Client:
        import httpx

        return httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)

    return route_entry(name).factory(config, http, SecretCredentials(config))


class StackRouting:
    """The stack's routes for new uploads, with the shared breaker (i2v/routing.py)."""

    def __init__(self, choice: RouteChoice) -> None:
        self._choice = choice

    def choose(self, requested: str | None) -> ChosenRoute:
        from i2v.errors import InvalidOptions

        configured = self._choice.routes
        if requested is not None and requested not in configured:
            raise InvalidOptions(
                f"provider {requested!r} is not configured on this stack; it has: {', '.join(configured)}",
                code="ROUTE_NOT_CONFIGURED",
            )
        # An upload that names its route is held to it; the others fail over.
        return self.named(requested or self._choice.pick())

    def named(self, name: str) -> ChosenRoute:
        from i2v.usecases.submit import ChosenRoute

        return ChosenRoute(provider=provider(name), settings=route_settings(name))

    def failed(self, name: str) -> None:
        self._choice.failed(name)


@cache
def routing() -> StackRouting:
    from i2v.observability import MetricUnit, metrics
    from i2v.routing import Breaker, BreakerConfig, RouteChoice

    config = settings()
    breaker = None
    if len(config.routes) > 1:  # one route: no failover, no breaker reads
        breaker = Breaker(
            client("dynamodb"),
            config.table_name,
            BreakerConfig(
                threshold=config.breaker_threshold,
                window_seconds=config.breaker_window_seconds,
                cooldown_seconds=config.breaker_cooldown_seconds,
            ),
            on_open=lambda route: metrics.add_metric(name="BreakerOpened", unit=MetricUnit.Count, value=1),
        )
    return StackRouting(RouteChoice(routes=config.routes, breaker=breaker))


@cache
def budget() -> Budget | None:
    """The daily budget guard; None without a cap, so the submit step makes no call for it."""
    config = settings()
    if config.daily_budget_usd <= 0:
        return None
    from i2v.budget import Budget, BudgetConfig

    return Budget(
        client("dynamodb"),
        config.table_name,
        BudgetConfig(daily_usd=config.daily_budget_usd, over_budget=config.over_budget_action),
    )


def notify(task: Task) -> None:
    """Publishes a task's outcome (on the topic, and the bus if the stack has one); the
    clients are made on the first notification, so a path that ends no task never creates them."""
    notifier().publish(task)


def endings() -> Endings:
    from i2v.observability import metrics
    from i2v.usecases.outcome import Endings

    return Endings(store=task_store(), notify=notify, metrics=metrics, clock=time.time)


def enqueue_finalize(order: FinalizeOrder) -> None:
    client("sqs").send_message(QueueUrl=settings().finalize_queue_url, MessageBody=order.model_dump_json())


def progress() -> Progress:
    from i2v.usecases.progress import Progress

    return Progress(
        store=task_store(),
        enqueue=enqueue_finalize,
        clock=time.time,
        result_ttl_seconds=lambda route: route_settings(route).result_ttl_seconds,
    )


def video_fetcher() -> FetchVideo:
    """Streams into the bucket; the downloader (httpcore, TLS) loads on the first video only."""
    config = settings()

    def fetch(url: str, key: str, metadata: dict[str, str], route: str) -> StoredVideo:
        from i2v.media.video import DownloadPolicy, stream_video_to_s3

        policy = DownloadPolicy(
            allowed_hosts=(*route_settings(route).video_allowed_hosts, *config.video_allowed_hosts),
            allow_http=config.video_allow_http,
            allow_private_networks=config.video_allow_private_networks,
            max_bytes=config.video_max_bytes,
            timeout_seconds=config.video_download_timeout_seconds,
        )
        return stream_video_to_s3(
            url, policy=policy, s3=client("s3"), bucket=config.bucket_name, key=key, metadata=metadata
        )

    return fetch


def stored_video_finder() -> FindStoredVideo:
    """Reads back a video an earlier try stored (failure paths of redeliveries only)."""
    bucket = settings().bucket_name

    def find(key: str, metadata: dict[str, str]) -> StoredVideo | None:
        from i2v.media import video
        from i2v.media.sink import stored_object

        found = stored_object(s3=client("s3"), bucket=bucket, key=key, metadata=metadata)
        if found is None:
            return None
        size, sha256, content_type = found
        return video.StoredVideo(size=size, sha256=sha256, content_type=content_type)

    return find


def uploads_redelivery() -> Redelivery:
    config = settings()
    return _redelivery(
        config.uploads_queue_url, config.submit_backoff_base_seconds, config.submit_backoff_max_seconds
    )


def finalize_redelivery() -> Redelivery:
    config = settings()
    return _redelivery(
        config.finalize_queue_url, config.finalize_backoff_base_seconds, config.finalize_backoff_max_seconds
    )


def poll_redelivery() -> Redelivery:
    config = settings()
    return _redelivery(
        config.poll_queue_url, config.finalize_backoff_base_seconds, config.finalize_backoff_max_seconds
    )


def _redelivery(queue_url: str, base_seconds: float, max_seconds: float) -> Redelivery:
    from i2v.redelivery import Redelivery

    return Redelivery(client("sqs"), queue_url, base_seconds=base_seconds, max_seconds=max_seconds)


# -- use cases, collaborators bound ----------------------------------------------------------


def submit() -> Callable[[Upload | Resume, str], SubmitOutcome]:
    """(upload or deferred task, owner: the queue message id) -> what became of it."""
    from i2v.observability import metrics
    from i2v.usecases.submit import SubmitConfig, submit_upload

    config = settings()

    def run(upload: Upload | Resume, owner: str) -> SubmitOutcome:
        return submit_upload(
            upload,
            owner=owner,
            config=SubmitConfig(
                defaults=config.default_options,
                incoming_prefix=config.incoming_prefix,
                webhook_base_url=config.webhook_base_url,
                presign_expiry_seconds=config.presign_expiry_seconds,
                submit_lease_seconds=config.submit_lease_seconds,
                videos_prefix=config.videos_prefix,
            ),
            store=task_store(),
            sources=source_store(),
            routing=routing(),
            endings=endings(),
            metrics=metrics,
            clock=time.time,
            budget=budget(),
            first_poll=poller().first,
        )

    return run


def callback() -> Callable[[CallbackRequest], UpdateOutcome]:
    """A webhook is verified by the route its URL names, configured or not any more."""
    from i2v.usecases.callback import receive_callback

    return partial(receive_callback, providers=provider, progress=progress())


def schedule_poll(order: PollOrder, delay_seconds: int) -> None:
    client("sqs").send_message(
        QueueUrl=settings().poll_queue_url, MessageBody=order.model_dump_json(), DelaySeconds=delay_seconds
    )


@cache
def poller() -> Poller:
    from i2v.usecases.poll import Pacer, Poller

    config = settings()
    return Poller(
        providers=provider,
        route_settings=route_settings,
        progress=progress(),
        schedule=schedule_poll,
        pacer=Pacer(concurrency=config.poll_max_concurrency),
        task_deadline_seconds=config.task_deadline_seconds,
    )


def finalizer() -> Finalizer:
    from i2v.observability import metrics
    from i2v.usecases.finalize import FinalizeConfig, Finalizer

    config = settings()
    return Finalizer(
        config=FinalizeConfig(
            bucket=config.bucket_name,
            incoming_prefix=config.incoming_prefix,
            videos_prefix=config.videos_prefix,
            max_attempts=config.max_finalize_attempts,
        ),
        providers=provider,
        fetch_video=video_fetcher(),
        stored_video=stored_video_finder(),
        endings=endings(),
        metrics=metrics,
    )


def resume_deferred(task_id: str) -> None:
    """Sends a deferred task whose day has come back to the uploads queue."""
    import json

    from i2v.usecases.submit import Resume

    client("sqs").send_message(
        QueueUrl=settings().uploads_queue_url, MessageBody=json.dumps(Resume(task_id=task_id).message())
    )


def reconciler() -> Callable[[Callable[[], float]], Counter[str]]:
    """(seconds left in this invocation) -> what was done."""
    from i2v.usecases.reconcile import ReconcileConfig, reconcile

    config = settings()

    def run(time_left: Callable[[], float]) -> Counter[str]:
        return reconcile(
            config=ReconcileConfig(
                reconcile_after_seconds=config.reconcile_after_seconds,
                task_deadline_seconds=config.task_deadline_seconds,
                finalize_stale_seconds=config.finalize_stale_seconds,
                unconfirmed_hold_seconds=config.unconfirmed_hold_seconds,
            ),
            providers=provider,
            progress=progress(),
            endings=endings(),
            resume=resume_deferred,
            time_left=time_left,
        )

    return run


def auditor() -> Callable[[Callable[[], float]], AuditReport]:
    """(seconds left in this invocation) -> what the scheduled upload audit found and did."""
    from i2v.observability import metrics
    from i2v.usecases.audit import (
        AuditConfig,
        AuditReads,
        UploadAudit,
        WatermarkStore,
        queue_depth,
        renotifier,
        sqs_sender,
    )

    config = settings()
    dynamodb = client("dynamodb")
    audit = UploadAudit(
        config=AuditConfig(
            bucket=config.bucket_name,
            incoming_prefix=config.incoming_prefix,
            videos_prefix=config.videos_prefix,
            grace_seconds=config.audit_grace_seconds,
            max_age_seconds=config.retention_days * 86_400,
            page_budget=config.audit_page_budget,
        ),
        s3=client("s3"),
        reads=AuditReads(dynamodb, config.table_name),
        watermarks=WatermarkStore(dynamodb, config.table_name),
        enqueue_upload=sqs_sender(client("sqs"), config.uploads_queue_url),
        renotify=renotifier(task_store(), endings().announce),
        dead_letters_waiting=queue_depth(client("sqs"), config.uploads_dead_letter_queue_url),
        metrics=metrics,
        clock=time.time,
    )

    def run(time_left: Callable[[], float]) -> AuditReport:
        return audit(repair=config.audit_repair, time_left=time_left)

    return run
