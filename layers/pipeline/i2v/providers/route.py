"""What a HappyHorse route is to the pipeline: its settings, its input rules, its adapter.

Every route module (i2v/providers/<route>.py) defines `ROUTE = Route(...)`: a settings
model with the route's documented defaults, and a factory for its adapter. The registry
(i2v/providers/__init__.py) maps route names to those modules and imports one only when a
task needs it, so a function pays only for the routes it serves.

Settings come from the environment under the route's own prefix (`DASHSCOPE_BASE_URL`,
`FAL_PRICE_1080P`, ...), and from the stack's `ROUTE_SETTINGS` parameter, comma-separated
`NAME=value` pairs with the same names, so a deployment can set any route's settings
without a template change. Secrets are named `{SECRET_PREFIX}{route}/api-key` and
`{SECRET_PREFIX}{route}/webhook-secret` unless a route's settings name them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from i2v.errors import InvalidImage, InvalidOptions, PipelineError

if TYPE_CHECKING:
    import httpx

    from i2v.domain import Options
    from i2v.providers.base import Credentials, Provider

# The HTTP client is made on first use: a function that only verifies webhooks never pays
# for importing httpx.
HttpClient = Callable[[], "httpx.Client"]

KeyEncoding = Literal["standard", "base64", "raw"]
"""How a webhook secret becomes the HMAC key: `standard` decodes a `whsec_<base64>` secret
and uses any other as raw UTF-8 bytes (the Standard Webhooks convention); `base64` always
decodes; `raw` always uses the secret's UTF-8 bytes, prefix and all."""

MODEL_VERSIONS = ("1.0", "1.1")


class RouteSettings(BaseModel):
    """What every route is configured with; a route subclasses it with its own defaults.

    Field `x` of route `r` is read from `R_X` (upper case). Tuple fields take a
    comma-separated list. Facts a provider does not publish are settings, never constants.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    base_url: str
    timeout_seconds: float = Field(default=15.0, gt=0)
    api_key_secret_name: str = ""
    webhook_secret_name: str = ""
    webhook_key_encoding: KeyEncoding = "standard"

    # Wire model ids per HappyHorse version; an empty id means the route does not offer it.
    model_1_0: str = ""
    model_1_1: str = ""

    # Hosts the route's videos may be downloaded from (a leading dot allows subdomains).
    video_allowed_hosts: tuple[str, ...] = ()

    # USD per generated second, per resolution: an estimate for the record, not a bill.
    price_720p: float | None = Field(default=None, ge=0)
    price_1080p: float | None = Field(default=None, ge=0)

    # Input rules: an image or option outside them is rejected before any paid call.
    image_formats: tuple[str, ...] = ("jpeg", "png", "webp")
    image_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    image_min_side_px: int = Field(default=0, ge=0)
    image_max_aspect_ratio: float | None = Field(default=None, gt=1)
    # Pillow's MAX_IMAGE_PIXELS: above it Pillow warns of a decompression bomb, above twice
    # it refuses to open the file; the image's decoded size is what a provider allocates.
    image_max_pixels: int = Field(default=89_478_485, gt=0)
    prompt_max_chars: int = Field(default=2500, ge=0)
    resolutions: tuple[str, ...] = ("720P", "1080P")
    duration_min: int = Field(default=3, ge=1)
    duration_max: int = Field(default=15, ge=1)

    # Polling routes (no webhooks): the first status check after submission, then every
    # interval; every status call (polls, the finalizer, the reconciler) stays under
    # `poll_rate_per_second` across the account where it is paced (the poll queue).
    first_poll_seconds: int = Field(default=60, ge=0, le=900)
    poll_interval_seconds: int = Field(default=15, ge=1, le=900)
    poll_rate_per_second: float = Field(default=20.0, gt=0)
    # How long the provider keeps a finished task's video: the download must come first.
    result_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    @field_validator("video_allowed_hosts", "image_formats", "resolutions", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("resolutions", mode="after")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.upper() for v in value)

    @model_validator(mode="after")
    def _within_bounds(self) -> Self:
        # A route that gives a field its own default redeclares it, which drops the bounds
        # declared here: they are checked again for every route.
        checks = {
            "timeout_seconds": self.timeout_seconds > 0,
            "price_720p": self.price_720p is None or self.price_720p >= 0,
            "price_1080p": self.price_1080p is None or self.price_1080p >= 0,
            "image_max_bytes": self.image_max_bytes > 0,
            "image_min_side_px": self.image_min_side_px >= 0,
            "image_max_aspect_ratio": self.image_max_aspect_ratio is None or self.image_max_aspect_ratio > 1,
            "image_max_pixels": self.image_max_pixels > 0,
            "prompt_max_chars": self.prompt_max_chars >= 0,
            "duration_min": 1 <= self.duration_min <= self.duration_max,
            "first_poll_seconds": 0 <= self.first_poll_seconds <= 900,
            "poll_interval_seconds": 1 <= self.poll_interval_seconds <= 900,
            "poll_rate_per_second": self.poll_rate_per_second > 0,
            "result_ttl_seconds": self.result_ttl_seconds >= 60,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"out of bounds: {', '.join(wrong)} (the bounds: i2v/providers/route.py)")
        return self

    def model_id(self, version: str) -> str | None:
        """The route's wire id of HappyHorse `version`, or None when it does not offer it."""
        return {"1.0": self.model_1_0, "1.1": self.model_1_1}.get(version) or None

    @property
    def model_versions(self) -> tuple[str, ...]:
        return tuple(v for v in MODEL_VERSIONS if self.model_id(v))

    def price_per_second(self, resolution: str) -> float | None:
        return {"720P": self.price_720p, "1080P": self.price_1080p}.get(resolution)

    def estimate_cost_usd(self, options: Options) -> float | None:
        price = self.price_per_second(options.resolution)
        return None if price is None else round(price * options.duration, 3)

    # -- input rules ----------------------------------------------------------------------

    def check_options(self, options: Options, *, route: str) -> None:
        """Raise InvalidOptions, with every reason, for options this route cannot take."""
        problems = []
        if options.resolution not in self.resolutions:
            problems.append(f"resolution {options.resolution} (takes {', '.join(self.resolutions)})")
        if not self.duration_min <= options.duration <= self.duration_max:
            problems.append(
                f"duration {options.duration} s (takes {self.duration_min}..{self.duration_max} s)"
            )
        if len(options.prompt) > self.prompt_max_chars:
            problems.append(
                f"a prompt of {len(options.prompt)} characters (takes up to {self.prompt_max_chars})"
            )
        version = options.model or "1.0"
        if self.model_id(version) is None:
            offered = ", ".join(self.model_versions) or "none"
            problems.append(f"HappyHorse {version} (offers {offered})")
        if problems:
            message = f"route {route} cannot take " + "; ".join(problems)
            raise InvalidOptions(message, code="UNSUPPORTED_OPTION")

    def check_image(self, image_format: str, width: int, height: int, size: int) -> None:
        """Raise InvalidImage, with the reason, when this route would refuse the image."""
        if image_format not in self.image_formats:
            raise InvalidImage(
                f"image is {image_format.upper()}; this route takes "
                f"{', '.join(f.upper() for f in self.image_formats)}",
                code="UNSUPPORTED_IMAGE_FORMAT",
            )
        if min(width, height) < self.image_min_side_px:
            raise InvalidImage(
                f"image is {width}x{height} px; each side must be at least {self.image_min_side_px} px",
                code="IMAGE_TOO_SMALL",
            )
        ratio = self.image_max_aspect_ratio
        if ratio is not None and max(width, height) > ratio * min(width, height):
            long, short = max(width, height), min(width, height)
            raise InvalidImage(
                f"image aspect ratio is {long / short:.2f}:1 ({width}x{height} px); "
                f"it must be at most {ratio:g}:1 either way",
                code="BAD_ASPECT_RATIO",
            )
        if width * height > self.image_max_pixels:
            raise InvalidImage(
                f"image is {width}x{height} px ({width * height / 1e6:.1f} Mpx); this route takes "
                f"at most {self.image_max_pixels} px ({self.image_max_pixels / 1e6:.1f} Mpx)",
                code="IMAGE_TOO_MANY_PIXELS",
            )
        if size > self.image_max_bytes:
            raise InvalidImage(
                f"image is {size} bytes ({size / 1024 / 1024:.2f} MiB); the limit is "
                f"{self.image_max_bytes} bytes ({self.image_max_bytes / 1024 / 1024:g} MiB)",
                code="IMAGE_TOO_LARGE",
            )


class RouteConfigError(PipelineError):
    """A route's settings are missing or invalid: a deployment error, said at cold start."""

    code = "ROUTE_CONFIG"


@dataclass(frozen=True)
class Route:
    """One HappyHorse route: what the registry knows about it."""

    name: str
    title: str
    settings: type[RouteSettings]
    factory: Callable[[Any, HttpClient, Credentials], Provider]
    webhooks: bool
    """True when the provider calls back per task; False for a polling route."""
    webhook_secret: bool = False
    """True when its webhooks are signed with a shared secret (fal signs with public keys)."""
    can_cancel: bool = False

    @property
    def env_prefix(self) -> str:
        return self.name.upper() + "_"

    def load_settings(self, environ: Mapping[str, str]) -> RouteSettings:
        """This route's settings from `environ` and its ROUTE_SETTINGS pairs."""
        values: dict[str, str] = {}
        pairs = dict(route_setting_pairs(environ.get("ROUTE_SETTINGS", "")))
        for source in (environ, pairs):
            for key, value in source.items():
                if key.upper().startswith(self.env_prefix):
                    values[key[len(self.env_prefix) :].lower()] = value
        secret_prefix = environ.get("SECRET_PREFIX", "happyhorse/")
        values.setdefault("api_key_secret_name", f"{secret_prefix}{self.name}/api-key")
        if self.webhook_secret:
            values.setdefault("webhook_secret_name", f"{secret_prefix}{self.name}/webhook-secret")
        try:
            return self.settings.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(self._problem(error) for error in exc.errors())
            raise RouteConfigError(f"route {self.name} is misconfigured: {problems}") from exc

    def _problem(self, error: Any) -> str:
        """One validation error, in the names a deployer sets (`FAL_PRICE_1080P`)."""
        if error["loc"]:
            return f"{self.env_prefix}{'.'.join(map(str, error['loc'])).upper()}: {error['msg']}"
        message = str(error["msg"]).removeprefix("Value error, ")
        for name in self.settings.model_fields:
            message = re.sub(rf"\b{name}\b", self.env_prefix + name.upper(), message)
        return message


def route_setting_pairs(raw: str) -> list[tuple[str, str]]:
    """`NAME=value,NAME=value` -> pairs; a value may hold commas when the next part has no
    `=` (a host list: `FAL_VIDEO_ALLOWED_HOSTS=.fal.media,.fal.run`)."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split(","):
        if "=" in part:
            name, _, value = part.partition("=")
            pairs.append((name.strip(), value.strip()))
        elif pairs and part.strip():
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value},{part.strip()}")
    return pairs
