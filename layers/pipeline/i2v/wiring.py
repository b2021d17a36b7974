"""The composition root: real collaborators built from the settings, once per process.

Handlers take what they need from here; tests build the use cases' collaborators
themselves (fakes, or moto-backed real ones).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from i2v.aws import client
from i2v.config import Settings, settings
from i2v.secrets import get_secret
from i2v.tasks.store import TaskStore

if TYPE_CHECKING:
    import httpx

    from i2v.notify import SnsNotifier
    from i2v.providers.base import Provider
    from i2v.storage import SourceStore
    from i2v.usecases.progress import FetchVideo, FinalizeConfig, Progress, StoredVideo


class SecretCredentials:
    """Provider secrets read on first use, so each function reads only what it needs."""

    def __init__(self, config: Settings) -> None:
        self._config = config

    def api_key(self) -> str:
        return get_secret(
            self._config.api_key_secret_name,
            store=self._config.secret_store,
            max_age=self._config.secret_cache_seconds,
        )

    def webhook_secret(self) -> str:
        return get_secret(
            self._config.webhook_secret_name,
            store=self._config.secret_store,
            max_age=self._config.secret_cache_seconds,
        )


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

    return SnsNotifier(client("sns"), settings().topic_arn)


@cache
def provider() -> Provider:
    from i2v.providers import create_provider

    config = settings()

    @cache
    def http() -> httpx.Client:
        import httpx

        return httpx.Client(timeout=config.provider_timeout_seconds, follow_redirects=False)

    return create_provider(config, http, SecretCredentials(config))


def finalize_config() -> FinalizeConfig:
    from i2v.usecases.progress import FinalizeConfig

    config = settings()
    return FinalizeConfig(
        bucket=config.bucket_name,
        incoming_prefix=config.incoming_prefix,
        videos_prefix=config.videos_prefix,
        lease_seconds=config.finalize_lease_seconds,
        max_attempts=config.max_finalize_attempts,
    )


def video_fetcher() -> FetchVideo:
    """Streams into the bucket; the downloader (httpcore, TLS) loads on the first video only."""
    config = settings()

    def fetch(url: str, key: str, metadata: dict[str, str]) -> StoredVideo:
        from i2v.media.video import DownloadPolicy, stream_video_to_s3

        policy = DownloadPolicy(
            allowed_hosts=config.video_allowed_hosts,
            allow_http=config.video_allow_http,
            allow_private_networks=config.video_allow_private_networks,
            max_bytes=config.video_max_bytes,
            timeout_seconds=config.video_download_timeout_seconds,
        )
        return stream_video_to_s3(
            url, policy=policy, s3=client("s3"), bucket=config.bucket_name, key=key, metadata=metadata
        )

    return fetch


def progress(owner: str) -> Progress:
    """The callback's and the reconciler's collaborators; `owner` is the request id."""
    import time

    from i2v.observability import metrics
    from i2v.usecases.progress import Progress

    return Progress(
        config=finalize_config(),
        store=task_store(),
        fetch_video=video_fetcher(),
        notify=notifier().publish,
        metrics=metrics,
        clock=time.time,
        owner=owner,
    )
