"""Route 2: Alibaba Cloud Model Studio (DashScope), a polling route; and the adapter of every
route that speaks its protocol.

Wire format: ../shared/PROVIDERS.md section 2. APIYI serves the same protocol under another
base URL and path prefix (section 2a): `DashScopeProvider` is its adapter too, and
i2v/providers/apiyi.py is only its settings. What the vendor does not publish (the cancel
answer, BMP, 10 or 20 MB, the video host) is a setting or said where it matters below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from i2v.domain import ErrorInfo
from i2v.errors import ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.base import Credentials, ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.http import call_json
from i2v.providers.route import HttpClient, Route, RouteSettings

NAME = "dashscope"
CREATE_PATH = "/services/aigc/video-generation/video-synthesis"

# Model Studio's hosts per region: (workspace host, shared host). Key, model and host must be in
# the same region. The workspace hosts are the recommended ones; the shared (legacy) hosts
# still answer and need no workspace. Virginia documents one host only.
REGION_HOSTS: Mapping[str, tuple[str | None, str | None]] = {
    "ap-southeast-1": (
        "https://{workspace}.ap-southeast-1.maas.aliyuncs.com",
        "https://dashscope-intl.aliyuncs.com",
    ),
    "cn-beijing": ("https://{workspace}.cn-beijing.maas.aliyuncs.com", "https://dashscope.aliyuncs.com"),
    "eu-central-1": ("https://{workspace}.eu-central-1.maas.aliyuncs.com", None),
    "cn-hongkong": ("https://{workspace}.cn-hongkong.maas.aliyuncs.com", None),
    "us-east-1": (None, "https://dashscope-us.aliyuncs.com"),
}
# A workspace id becomes a DNS label of the host: nothing that could leave the label.
_WORKSPACE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


def regional_base_url(region: str, workspace_id: str = "") -> str:
    """Model Studio's base URL for `region`: its workspace host when a workspace is given and
    the region has one, else its shared host; ValueError for an unknown region, or a region
    that has only workspace hosts and no workspace."""
    try:
        workspace_host, shared_host = REGION_HOSTS[region]
    except KeyError:
        raise _unknown_region(region) from None
    if workspace_id and workspace_host:
        return workspace_host.format(workspace=workspace_id)
    if shared_host:
        return shared_host
    raise ValueError(f"region {region} has only workspace hosts: give a workspace id, or a whole base URL")


def _unknown_region(region: str) -> ValueError:
    return ValueError(f"unknown region {region!r}; the regions are: {', '.join(REGION_HOSTS)}")


def _prefix(value: str) -> str:
    cleaned = "/" + value.strip().strip("/")
    return "" if cleaned == "/" else cleaned


class DashScopeProtocolSettings(RouteSettings):
    """What every route on DashScope's protocol is configured with (`<ROUTE>_*`).

    The class attributes are the route's, not settings: its name, its title in messages, and
    whether its cancel call is known to exist. A field given a new default loses pydantic's
    bounds; RouteSettings checks them again for every route.
    """

    route_name: ClassVar[str] = NAME
    route_title: ClassVar[str] = "Model Studio (DashScope)"
    cancellable: ClassVar[bool] = True

    path_prefix: str = "/api/v1"
    # Where the task query (and cancel) lives; empty: the same as `path_prefix`.
    task_path_prefix: str = ""

    model_1_0: str = "happyhorse-1.0-i2v"
    model_1_1: str = "happyhorse-1.1-i2v"
    # The videos are signed object-storage (OSS) URLs; the exact host is to be checked against
    # a real answer.
    video_allowed_hosts: tuple[str, ...] = (".aliyuncs.com",)
    # BMP: unknown, so not taken. 10 or 20 MB: sources differ, so the lower one.
    image_formats: tuple[str, ...] = ("jpeg", "png", "webp")
    image_max_bytes: int = 10 * 1024 * 1024
    # 5,000 non-Chinese or 2,500 Chinese characters; longer prompts are truncated, not refused.
    prompt_max_chars: int = 5000
    resolutions: tuple[str, ...] = ("720P", "1080P")
    duration_min: int = 3
    duration_max: int = 15
    # A polling route. Generation takes 1 to 5 minutes; the vendor suggests polling every 15 s;
    # 20 task queries per second per account; a task id (and its video URL) lives 24 h.
    first_poll_seconds: int = 60
    poll_interval_seconds: int = 15
    poll_rate_per_second: float = 20.0
    result_ttl_seconds: int = 24 * 3600

    @property
    def api_base_url(self) -> str:
        """Scheme and host the paths are appended to."""
        return self.base_url.rstrip("/")

    @property
    def create_url(self) -> str:
        return f"{self.api_base_url}{_prefix(self.path_prefix)}{CREATE_PATH}"

    @property
    def tasks_url(self) -> str:
        return f"{self.api_base_url}{_prefix(self.task_path_prefix or self.path_prefix)}/tasks"


class DashScopeSettings(DashScopeProtocolSettings):
    """`DASHSCOPE_*`: the region (`DASHSCOPE_REGION`, one of REGION_HOSTS) and workspace
    (`DASHSCOPE_WORKSPACE_ID`, from the console's Workspace Details) pick the host; a whole
    `DASHSCOPE_BASE_URL` (scheme and host, no path) wins over both."""

    base_url: str = ""
    region: str = "ap-southeast-1"
    workspace_id: str = Field(default="", validate_default=True)
    # HappyHorse 1.0 in the international (Singapore) deployment, as third parties report the
    # Model Studio listing; no Alibaba page with the figure was seen. HappyHorse 1.1 and the
    # Beijing (CNY) prices are unknown. One price serves both versions.
    price_720p: float | None = Field(default=0.14, ge=0)
    price_1080p: float | None = Field(default=0.24, ge=0)

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().lower()
        if not info.data.get("base_url") and value not in REGION_HOSTS:
            raise _unknown_region(value)
        return value

    @field_validator("workspace_id")
    @classmethod
    def _usable_workspace(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if value and not _WORKSPACE_ID.match(value):
            raise ValueError("a workspace id is letters, digits, '-' and '_' (at most 64)")
        region = info.data.get("region")
        if not info.data.get("base_url") and isinstance(region, str) and region in REGION_HOSTS:
            regional_base_url(region, value)  # a region with only workspace hosts needs one
        return value

    @property
    def api_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return regional_base_url(self.region, self.workspace_id)


# The one place provider statuses are read: the state, and for a task that ended without a
# video the error code used when the answer carries none. Unknown values stay non-terminal.
STATUS_MAP: Mapping[str, tuple[ProviderState, str | None]] = {
    "PENDING": (ProviderState.PENDING, None),
    "RUNNING": (ProviderState.RUNNING, None),
    "SUCCEEDED": (ProviderState.SUCCEEDED, None),
    "FAILED": (ProviderState.FAILED, "PROVIDER_FAILED"),
    "CANCELED": (ProviderState.FAILED, "PROVIDER_CANCELED"),
    "UNKNOWN": (ProviderState.GONE, None),  # an unknown or expired id, answered with HTTP 200
}


class TaskOutput(BaseModel):
    """`output` of the create and query answers."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    task_id: str = ""
    task_status: str
    video_url: str | None = None
    code: str | None = None
    message: str | None = None


class TaskAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    output: TaskOutput


def error_code(provider_code: str) -> str:
    """`InvalidParameter` -> `PROVIDER_INVALID_PARAMETER`, `Throttling.RateQuota` ->
    `PROVIDER_THROTTLING_RATE_QUOTA`: the provider's code in our codes' shape."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", provider_code)
    return "PROVIDER_" + "_".join(filter(None, re.split(r"[^A-Za-z0-9]+", words))).upper()


def to_update(output: TaskOutput, task_id: str) -> ProviderUpdate:
    raw = output.task_status
    state, fallback_code = STATUS_MAP.get(raw.upper(), (ProviderState.PENDING, None))
    error = None
    if state is ProviderState.FAILED:
        error = ErrorInfo(
            code=error_code(output.code) if output.code else fallback_code or "PROVIDER_FAILED",
            message=output.message or f"the provider reported the task {raw}",
        )
    return ProviderUpdate(
        provider_task_id=output.task_id or task_id,
        state=state,
        raw_status=raw,
        video_url=output.video_url or None,
        error=error,
    )


class DashScopeProvider:
    """The adapter of a route on DashScope's protocol; its settings say which route."""

    supports_webhooks = False

    def __init__(
        self, settings: DashScopeProtocolSettings, http: HttpClient, credentials: Credentials
    ) -> None:
        self.name = settings.route_name
        self._settings = settings
        self._http = http
        self._credentials = credentials
        self._title = settings.route_title
        self._create_url = settings.create_url
        self._tasks_url = settings.tasks_url

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._credentials.api_key()}", "Accept": "application/json"}
        if body is not None:
            headers["X-DashScope-Async"] = "enable"  # mandatory: a synchronous create is refused
        return call_json(self._http, method, url, route=self._title, headers=headers, body=body)

    def _output(self, payload: Any) -> TaskOutput:
        try:
            return TaskAnswer.model_validate(payload).output
        except ValidationError as exc:
            raise ProviderUnavailable(
                f"{self._title} sent an unexpected body: {exc.error_count()} errors"
            ) from exc

    def _task_url(self, provider_task_id: str) -> str:
        from urllib.parse import quote

        return f"{self._tasks_url}/{quote(provider_task_id, safe='')}"

    def submit(self, request: SubmitRequest) -> str:
        options = request.options
        version = options.model or "1.0"
        model = self._settings.model_id(version)
        if model is None:
            raise ProviderRejected(
                f"{self._title} does not offer HappyHorse {version}", code="UNSUPPORTED_OPTION"
            )
        task_input: dict[str, Any] = {"media": [{"type": "first_frame", "url": request.image_url}]}
        if options.prompt:
            task_input["prompt"] = options.prompt
        # The watermark is on unless turned off.
        parameters: dict[str, Any] = {
            "resolution": options.resolution,
            "duration": options.duration,
            "watermark": False,
        }
        if options.seed is not None:
            parameters["seed"] = options.seed
        body = {"model": model, "input": task_input, "parameters": parameters}
        output = self._output(self._request("POST", self._create_url, body))
        if not output.task_id:
            raise ProviderUnavailable(f"{self._title} created no task id")
        return output.task_id

    def status(self, provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        output = self._output(self._request("GET", self._task_url(provider_task_id)))
        return to_update(output, provider_task_id)

    def cancel(self, provider_task_id: str, *, model: str | None = None) -> bool:
        """Cancel a task still queued (PENDING). False when the route has no cancel call or the
        provider refuses (a task already running or ended, an unknown id); a transient failure
        raises ProviderUnavailable, as any call does.

        `POST {tasks}/{id}/cancel` for PENDING tasks is Model Studio's async-task API (its
        "Manage asynchronous tasks" page; the vendor's SDK, `Jobs.cancel`); the status and code
        of a refusal are not published, so any refusal reads as "not canceled"."""
        if not self._settings.cancellable:
            return False
        try:
            self._request("POST", f"{self._task_url(provider_task_id)}/cancel")
        except ProviderRejected:
            return False
        return True

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> ProviderUpdate:
        # Completion is learned by polling; Model Studio's EventBridge push is not wired here.
        raise Unauthorized(f"{self._title}: this route takes no webhooks")


ROUTE = Route(
    name=NAME,
    title=DashScopeSettings.route_title,
    settings=DashScopeSettings,
    factory=DashScopeProvider,
    webhooks=False,
    can_cancel=DashScopeSettings.cancellable,
)
