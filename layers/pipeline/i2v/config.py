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
    event_bus_name: str = Field(default="", alias="EVENT_BUS_NAME")
    """The EventBridge bus that also receives every notification; empty: none (EventBusEnabled)."""
    uploads_queue_url: str = Field(default="", alias="UPLOADS_QUEUE_URL")
    finalize_queue_url: str = Field(default="", alias="FINALIZE_QUEUE_URL")
    incoming_prefix: str = Field(default="incoming/", alias="INCOMING_PREFIX")
    videos_prefix: str = Field(default="videos/", alias="VIDEOS_PREFIX")

    routes: tuple[str, ...] = Field(default=("magnific",), min_length=1, alias="ROUTES")
    """The configured routes, primary first (i2v/providers/__init__.py lists them all).
    Each route's own settings are read from its prefix: i2v/providers/route.py."""
    route_settings: str = Field(default="", alias="ROUTE_SETTINGS")
    """`NAME=value` pairs of route settings (read with each route's own, by its prefix)."""
    secret_store: Literal["secretsmanager", "ssm"] = Field(default="secretsmanager", alias="SECRET_STORE")
    secret_prefix: str = Field(default="happyhorse/", alias="SECRET_PREFIX")
    secret_cache_seconds: int = Field(default=300, ge=0, alias="SECRET_CACHE_SECONDS")
    webhook_base_url: str = Field(default="", alias="WEBHOOK_BASE_URL")
    breaker_threshold: int = Field(default=5, ge=1, alias="BREAKER_THRESHOLD")
    breaker_window_seconds: int = Field(default=60, ge=1, alias="BREAKER_WINDOW_SECONDS")
    breaker_cooldown_seconds: int = Field(default=300, ge=1, alias="BREAKER_COOLDOWN_SECONDS")
    unconfirmed_hold_seconds: int = Field(default=1800, ge=60, alias="UNCONFIRMED_HOLD_SECONDS")
    """How long a submission that got no answer waits for its webhook before it FAILS."""
    poll_queue_url: str = Field(default="", alias="POLL_QUEUE_URL")
    poll_max_concurrency: int = Field(default=2, ge=1, alias="POLL_MAX_CONCURRENCY")

    default_prompt: str = Field(default="", alias="DEFAULT_PROMPT")
    default_resolution: Resolution = Field(default="1080P", alias="DEFAULT_RESOLUTION")
    default_duration: int = Field(default=5, alias="DEFAULT_DURATION")
    presign_expiry_seconds: int = Field(default=3600, ge=60, le=604800, alias="PRESIGN_EXPIRY_SECONDS")

    submit_lease_seconds: int = Field(default=180, ge=1, alias="SUBMIT_LEASE_SECONDS")
    """How long a claim keeps other deliveries off a task: above the submit function's
    Timeout, and at most the uploads queue's visibility timeout less that Timeout (the
    message of a try that died must find it expired, however late in its batch it claimed)."""
    submit_backoff_base_seconds: int = Field(default=10, ge=0, alias="SUBMIT_BACKOFF_BASE_SECONDS")
    submit_backoff_max_seconds: int = Field(default=900, ge=0, le=43200, alias="SUBMIT_BACKOFF_MAX_SECONDS")

    video_max_bytes: int = Field(default=2 * 1024**3, gt=0, alias="VIDEO_MAX_BYTES")
    video_allowed_hosts: tuple[str, ...] = Field(default=(), alias="VIDEO_ALLOWED_HOSTS")
    """Hosts every route's videos may also come from, beside the route's own list."""
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

    # The upload audit (i2v/usecases/audit.py).
    uploads_dead_letter_queue_url: str = Field(default="", alias="UPLOADS_DEAD_LETTER_QUEUE_URL")
    audit_grace_seconds: int = Field(default=3600, ge=0, alias="AUDIT_GRACE_SECONDS")
    audit_page_budget: int = Field(default=50, ge=1, alias="AUDIT_PAGE_BUDGET")
    audit_repair: bool = Field(default=True, alias="AUDIT_REPAIR")
    daily_budget_usd: float = Field(default=0.0, ge=0, alias="DAILY_BUDGET_USD")
    """The cap on a UTC day's estimated spend (i2v/budget.py); 0 is no cap, and no call."""
    over_budget_action: Literal["wait", "reject"] = Field(default="wait", alias="OVER_BUDGET_ACTION")

    @field_validator("video_allowed_hosts", "routes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("routes", mode="after")
    @classmethod
    def _known_routes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from i2v.providers import ROUTES, known_routes

        unknown = [name for name in value if name not in ROUTES]
        if unknown:
            raise ValueError(f"unknown routes {unknown}; the routes are: {known_routes()}")
        if len(value) > 5:
            raise ValueError("at most 5 routes: the template grants secrets to 5 slots")
        if len(set(value)) != len(value):
            raise ValueError(f"a route is listed twice: {list(value)}")
        return value

    @property
    def primary_route(self) -> str:
        return self.routes[0]

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
