"""What a chaos run does: its uploads, its fault rates, and the local stack's settings.

Everything random in a run (which route and image each upload gets, every fault drawn in
the simulators and the functions) comes from `seed`.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local.simulators.core.chaos import FaultRates

ROUTES = ("magnific", "dashscope", "apiyi", "aimlapi", "fal")

# Per-request (or per-task, per-call) probabilities: every kind of the issue, about 15 % of
# create calls and of status reads, a fault on roughly half of all tasks' paths.
PROVIDER_RATES = FaultRates(
    create_429=0.04,
    create_500=0.03,
    create_503=0.03,
    create_timeout=0.03,
    create_reset=0.03,
    status_429=0.03,
    status_500=0.03,
    status_503=0.03,
    status_timeout=0.03,
    status_reset=0.03,
    webhook_drop=0.05,
    webhook_triplicate=0.05,
    webhook_reorder=0.05,
    webhook_late=0.05,
    webhook_unknown_task=0.05,
    video_truncated=0.04,
    video_slow=0.04,
    video_wrong_type=0.02,
    video_oversized=0.02,
    retry_after=1,
    hang_seconds=3.0,
    late_seconds=8.0,
    slow_seconds=4.0,
)
WORKER_RATES = {
    "dynamodb_throttle": 0.05,
    "dynamodb_error": 0.01,
    "sns_publish_failure": 0.05,
    "die_after_claim": 0.03,
    "die_before_provider_id": 0.03,
    "die_after_video_stored": 0.03,
    "die_before_notification": 0.03,
}

# The stack's clocks, shortened together so that what holds deployed (120 s < 180 s <=
# 720 s - 120 s) holds here: submit timeout < submit lease <= uploads queue visibility -
# submit timeout, so no delivery re-claims a task while a try runs, and the message of a try
# that died finds the lease expired however late in its batch it claimed. Each queue's
# visibility stays above its function's timeout (the finalize queue's is the order's lease).
# The reconciler keeps a minute in reserve, so its function keeps 90 s (its poll queue
# 100 s). Webhooks come late past the reconciler's threshold, a provider hangs past the
# route's timeout, a slow video takes longer than the download may.
FUNCTION_TIMEOUT_SECONDS = {"SubmitFunction": 20, "CallbackFunction": 15, "ReconcileFunction": 90}
SUBMIT_LEASE_SECONDS = 22
VISIBILITY_TIMEOUT_SECONDS = {"SubmitFunction": 45, "CallbackFunction": 25, "ReconcileFunction": 100}
RECONCILE_AFTER_SECONDS = 5
PROVIDER_TIMEOUT_SECONDS = 1.5
VIDEO_DOWNLOAD_TIMEOUT_SECONDS = 3
# The pipeline's lowest allowed values: an unanswered submission waits this long for its
# webhook, a silent FINALIZING task this long for its order.
UNCONFIRMED_HOLD_SECONDS = 60
FINALIZE_STALE_SECONDS = 60
# Every upload ends by then at the latest (TIMED_OUT); the run waits this long past its last.
TASK_DEADLINE_SECONDS = 150
REJECTED_SHARE = 0.05  # uploads that are not images (REJECTED before any paid call)
UNROUTED_SHARE = 0.2  # uploads that name no route (the primary, or failover)


@dataclass(frozen=True)
class Upload:
    key: str
    route: str | None  # None: the upload names no route
    image: str  # "png", "jpeg", "not-an-image"
    at: float  # seconds after the first upload


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    uploads: int
    spread_seconds: float  # uploads are spread over this long
    provider_rates: FaultRates = PROVIDER_RATES
    worker_rates: dict[str, float] = field(default_factory=lambda: dict(WORKER_RATES))

    def schedule(self) -> list[Upload]:
        """Every upload of the run: key, route, image and when it is PUT."""
        draw = random.Random(self.seed)  # noqa: S311 - a replayable plan, not security
        uploads = []
        for index in range(self.uploads):
            route = None if draw.random() < UNROUTED_SHARE else ROUTES[index % len(ROUTES)]
            image = "not-an-image" if draw.random() < REJECTED_SHARE else draw.choice(("png", "jpeg"))
            suffix = ".jpg" if image == "jpeg" else ".png"
            at = self.spread_seconds * index / max(1, self.uploads - 1)
            uploads.append(Upload(f"incoming/chaos-{self.seed}/{index:04d}{suffix}", route, image, at))
        return uploads

    def environment(self, folder: Path) -> dict[str, str]:
        """The functions' environment: the short clocks and the worker's fault hooks."""
        submit_timeout = FUNCTION_TIMEOUT_SECONDS["SubmitFunction"]
        uploads_visibility = VISIBILITY_TIMEOUT_SECONDS["SubmitFunction"]
        if not submit_timeout < SUBMIT_LEASE_SECONDS <= uploads_visibility - submit_timeout:
            raise ValueError("the clocks must keep submit timeout < lease <= visibility - submit timeout")
        worker_plan = {
            "seed": self.seed,
            "rates": self.worker_rates,
            "log": str(fault_log(folder)),
            "counter_dir": str(folder / "processes"),
        }
        return {
            "SUBMIT_BACKOFF_BASE_SECONDS": "1",
            "SUBMIT_BACKOFF_MAX_SECONDS": "8",
            "FINALIZE_BACKOFF_BASE_SECONDS": "1",
            "FINALIZE_BACKOFF_MAX_SECONDS": "8",
            "SUBMIT_LEASE_SECONDS": str(SUBMIT_LEASE_SECONDS),
            "RECONCILE_AFTER_SECONDS": str(RECONCILE_AFTER_SECONDS),
            "UNCONFIRMED_HOLD_SECONDS": str(UNCONFIRMED_HOLD_SECONDS),
            "FINALIZE_STALE_SECONDS": str(FINALIZE_STALE_SECONDS),
            "TASK_DEADLINE_SECONDS": str(TASK_DEADLINE_SECONDS),
            "VIDEO_DOWNLOAD_TIMEOUT_SECONDS": str(VIDEO_DOWNLOAD_TIMEOUT_SECONDS),
            "DEFAULT_DURATION": "3",
            "DEFAULT_RESOLUTION": "720P",
            **{f"{route.upper()}_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT_SECONDS) for route in ROUTES},
            "LOCAL_WORKER_HOOKS": "local.chaos.worker",
            "LOCAL_CHAOS": json.dumps(worker_plan),
        }

    def simulator_options(self, folder: Path) -> dict[str, Any]:
        return {
            "render_max_long_side": 96,
            "progress_delay": 0.1,
            "fault_rates": self.provider_rates,
            "fault_seed": self.seed,
            "fault_log": fault_log(folder),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "provider_rates": {k: v for k, v in asdict(self.provider_rates).items()},
            "worker_rates": dict(self.worker_rates),
            "clocks": {
                "function_timeout_seconds": FUNCTION_TIMEOUT_SECONDS,
                "submit_lease_seconds": SUBMIT_LEASE_SECONDS,
                "visibility_timeout_seconds": VISIBILITY_TIMEOUT_SECONDS,
                "reconcile_after_seconds": RECONCILE_AFTER_SECONDS,
                "provider_timeout_seconds": PROVIDER_TIMEOUT_SECONDS,
                "video_download_timeout_seconds": VIDEO_DOWNLOAD_TIMEOUT_SECONDS,
                "unconfirmed_hold_seconds": UNCONFIRMED_HOLD_SECONDS,
                "finalize_stale_seconds": FINALIZE_STALE_SECONDS,
                "task_deadline_seconds": TASK_DEADLINE_SECONDS,
            },
        }


def fault_log(folder: Path) -> Path:
    return folder / "faults.jsonl"


def image_bytes(kind: str, variant: int) -> bytes:
    """A small valid image (each side >= 300 px, within every route's rules), or not one."""
    if kind == "not-an-image":
        return b"this is not an image, whatever its name says\n"
    from PIL import Image, ImageDraw

    width, height = 480 + (variant % 4) * 40, 360
    image = Image.new("RGB", (width, height), (20 + variant % 200, 90, 160))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, width // 2, height // 2), fill=(250, 200, 60))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if kind == "jpeg" else "PNG")
    return buffer.getvalue()
