"""The functions' settings: one pydantic model of the environment, checked at cold start.

Every name here is set by template.yaml (Globals and per-function Environment) and, for
the local stack, by local/template.py from the same template, so the two cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from i2v.domain import Options, Resolution


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    table_name: str = Field(alias="TABLE_NAME")
    bucket_name: str = Field(alias="BUCKET_NAME")
    topic_arn: str = Field(alias="TOPIC_ARN")
    uploads_queue_url: str = Field(default="", alias="UPLOADS_QUEUE_URL")
    finalize_queue_url: str = Field(default="", alias="FINALIZE_QUEUE_URL")
    incoming_prefix: str = Field(default="incoming/", alias="INCOMING_PREFIX")
    videos_prefix: str = Field(default="videos/", alias="VIDEOS_PREFIX")

    provider: str = Field(default="magnific", alias="PROVIDER")
    provider_base_url: str = Field(default="https://api.magnific.com", alias="PROVIDER_BASE_URL")
    provider_api_key_header: str = Field(default="x-magnific-api-key", alias="PROVIDER_API_KEY_HEADER")
    provider_model: str = Field(default="happy-horse-1", alias="PROVIDER_MODEL")
    provider_timeout_seconds: float = Field(default=15.0, gt=0, alias="PROVIDER_TIMEOUT_SECONDS")
    secret_store: Literal["secretsmanager", "ssm"] = Field(default="secretsmanager", alias="SECRET_STORE")
    api_key_secret_name: str = Field(alias="API_KEY_SECRET_NAME")
    webhook_secret_name: str = Field(alias="WEBHOOK_SECRET_NAME")
    secret_cache_seconds: int = Field(default=300, ge=0, alias="SECRET_CACHE_SECONDS")
    webhook_base_url: str = Field(default="", alias="WEBHOOK_BASE_URL")

    default_prompt: str = Field(default="", alias="DEFAULT_PROMPT")
    default_resolution: Resolution = Field(default="1080P", alias="DEFAULT_RESOLUTION")
    default_duration: int = Field(default=5, alias="DEFAULT_DURATION")
    presign_expiry_seconds: int = Field(default=3600, ge=60, le=604800, alias="PRESIGN_EXPIRY_SECONDS")

    submit_backoff_base_seconds: int = Field(default=10, ge=0, alias="SUBMIT_BACKOFF_BASE_SECONDS")
    submit_backoff_max_seconds: int = Field(default=900, ge=0, le=43200, alias="SUBMIT_BACKOFF_MAX_SECONDS")

    video_max_bytes: int = Field(default=2 * 1024**3, gt=0, alias="VIDEO_MAX_BYTES")
    video_allowed_hosts: tuple[str, ...] = Field(default=(), alias="VIDEO_ALLOWED_HOSTS")
    video_download_timeout_seconds: float = Field(default=600.0, gt=0, alias="VIDEO_DOWNLOAD_TIMEOUT_SECONDS")
    # Only the local stack turns these on: its simulator serves plain HTTP on loopback.
    video_allow_http: bool = Field(default=False, alias="VIDEO_ALLOW_HTTP")
    video_allow_private_networks: bool = Field(default=False, alias="VIDEO_ALLOW_PRIVATE_NETWORKS")

    max_finalize_attempts: int = Field(default=5, ge=1, alias="MAX_FINALIZE_ATTEMPTS")
    finalize_backoff_base_seconds: int = Field(default=5, ge=0, alias="FINALIZE_BACKOFF_BASE_SECONDS")
    finalize_backoff_max_seconds: int = Field(
        default=300, ge=0, le=43200, alias="FINALIZE_BACKOFF_MAX_SECONDS"
    )
    finalize_stale_seconds: int = Field(default=4500, ge=60, alias="FINALIZE_STALE_SECONDS")
    reconcile_after_seconds: int = Field(default=600, ge=0, alias="RECONCILE_AFTER_SECONDS")
    task_deadline_seconds: int = Field(default=7200, ge=60, alias="TASK_DEADLINE_SECONDS")
    retention_days: int = Field(default=90, ge=1, alias="RETENTION_DAYS")

    @field_validator("video_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @property
    def default_options(self) -> Options:
        return Options(
            prompt=self.default_prompt,
            resolution=self.default_resolution,
            duration=self.default_duration,
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return Settings.model_validate(dict(os.environ if environ is None else environ))


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, read once per cold start."""
    return load_settings()
