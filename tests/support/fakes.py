"""Small in-memory stand-ins for the collaborators a use case takes.

Fakes, not mocks: they behave like the real thing in the ways a use case relies on,
so a test states an outcome ("the provider got one task") rather than a call sequence.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from i2v.domain import Task
from i2v.errors import DownloadFailed, PipelineError
from i2v.providers.base import ProviderState, ProviderUpdate, SubmitRequest

if TYPE_CHECKING:
    from i2v.providers.route import RouteSettings
    from i2v.usecases.submit import ChosenRoute


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeProvider:
    name: str = "magnific"
    supports_webhooks: bool = True
    submitted: list[SubmitRequest] = field(default_factory=list)
    submit_errors: list[PipelineError] = field(default_factory=list)
    statuses: dict[str, ProviderUpdate] = field(default_factory=dict)
    callbacks_valid: bool = True

    def submit(self, request: SubmitRequest) -> str:
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        self.submitted.append(request)
        return f"prov-{len(self.submitted)}"

    cancelled: list[str] = field(default_factory=list)

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        return self.statuses.get(
            provider_task_id,
            ProviderUpdate(
                provider_task_id=provider_task_id, state=ProviderState.RUNNING, raw_status="IN_PROGRESS"
            ),
        )

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        self.cancelled.append(provider_task_id)
        return True

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        from i2v.errors import Unauthorized

        if not self.callbacks_valid:
            raise Unauthorized("bad signature")
        return ProviderUpdate.model_validate_json(body)


def fake_route_settings(**changes: Any) -> RouteSettings:
    """Magnific's documented rules, with a price of 0.1 USD per second at any resolution."""
    from i2v.providers.magnific import MagnificSettings

    return MagnificSettings(**{"price_720p": 0.1, "price_1080p": 0.1, **changes})


@dataclass
class FakeRouting:
    """The stack's routes: each name a FakeProvider with Magnific's rules. `down` routes
    are passed over for new tasks, as an open breaker would be."""

    providers: dict[str, FakeProvider]
    settings: dict[str, RouteSettings] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    failed_error: Exception | None = None  # raised by `failed`, as a breaker write that fails

    def choose(self, requested: str | None) -> ChosenRoute:
        from i2v.errors import InvalidOptions

        if requested is not None and requested not in self.providers:
            raise InvalidOptions(f"provider {requested!r} is not configured", code="ROUTE_NOT_CONFIGURED")
        up = [name for name in self.providers if name not in self.down] or list(self.providers)
        return self.named(requested or up[0])

    def named(self, name: str) -> ChosenRoute:
        from i2v.usecases.submit import ChosenRoute

        return ChosenRoute(
            provider=self.providers[name],  # type: ignore[arg-type]
            settings=self.settings.get(name) or fake_route_settings(),
        )

    def failed(self, name: str) -> None:
        self.failures.append(name)
        if self.failed_error is not None:
            raise self.failed_error


@dataclass
class RecordingMetrics:
    recorded: list[tuple[str, float]] = field(default_factory=list)

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.recorded.append((name, value))

    def total(self, name: str) -> float:
        return sum(v for n, v in self.recorded if n == name)


@dataclass
class Notifications:
    sent: list[Task] = field(default_factory=list)
    fail_next: int = 0

    def __call__(self, task: Task) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("SNS unreachable")
        self.sent.append(task)


@dataclass(frozen=True)
class Stored:
    size: int
    sha256: str
    content_type: str = "video/mp4"


@dataclass
class FakeVideoFetcher:
    """Answers like stream_video_to_s3, or fails as told; what it stored stays in `objects`
    (key -> the video and its metadata), where `stored` finds it as the bucket would."""

    fetched: list[tuple[str, str]] = field(default_factory=list)
    errors: list[DownloadFailed] = field(default_factory=list)
    objects: dict[str, tuple[Stored, dict[str, str]]] = field(default_factory=dict)

    def __call__(self, url: str, key: str, metadata: dict[str, str], route: str) -> Stored:
        if self.errors:
            raise self.errors.pop(0)
        self.fetched.append((url, key))
        stored = Stored(size=1234, sha256="ab" * 32)
        self.objects[key] = (stored, dict(metadata))
        return stored

    def stored(self, key: str, metadata: dict[str, str]) -> Stored | None:
        found = self.objects.get(key)
        return found[0] if found is not None and found[1] == metadata else None


def image_bytes(width: int = 640, height: int = 480, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class LambdaContext:
    """What Powertools reads from Lambda's context object."""

    function_name: str = "test-function"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "req-00000000"
    log_group_name: str = "/aws/lambda/test-function"
    log_stream_name: str = "2026/11/21/[$LATEST]0"
    remaining_millis: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis
