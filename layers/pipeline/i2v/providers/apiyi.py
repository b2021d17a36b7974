"""Route 2a: APIYI, Model Studio's protocol behind a reseller: the DashScope adapter with APIYI's
base URL, path prefix and rules (../shared/PROVIDERS.md section 2a). A polling route."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from i2v.providers.dashscope import DashScopeProtocolSettings, DashScopeProvider
from i2v.providers.route import Route

NAME = "apiyi"


class ApiyiSettings(DashScopeProtocolSettings):
    """`APIYI_*`. The task query under `/wan/api/v1/tasks/{id}` is unverified:
    `APIYI_TASK_PATH_PREFIX` moves it."""

    route_name: ClassVar[str] = NAME
    route_title: ClassVar[str] = "APIYI"
    cancellable: ClassVar[bool] = False  # whether APIYI passes the cancel call through: unknown

    base_url: str = "https://api.apiyi.com"
    path_prefix: str = "/wan/api/v1"
    duration_min: int = Field(default=2, ge=1)  # APIYI's docs say 2..15 s (Model Studio's, 3..15)
    # 98 % of Alibaba's list price, failed tasks not billed; no per-second figure seen, nor which
    # list (Singapore USD or Beijing CNY) it follows: set APIYI_PRICE_720P / APIYI_PRICE_1080P.
    price_720p: float | None = Field(default=None, ge=0)
    price_1080p: float | None = Field(default=None, ge=0)


ROUTE = Route(
    name=NAME,
    title=ApiyiSettings.route_title,
    settings=ApiyiSettings,
    factory=DashScopeProvider,
    webhooks=False,  # APIYI's webhook support is unknown
    can_cancel=ApiyiSettings.cancellable,
)
