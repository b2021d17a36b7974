"""Provider-side faults drawn per request from a seeded random source (fault injection for
`make chaos`), beside the counted "next N" faults of `Faults`.

Each fault kind has its own stream, seeded from (seed, route, kind), so raising one rate
shifts no other kind's draws, and a run with the same seed draws the same sequence per
kind. Every fault injected is appended to a JSON-lines log (kind, time, route, provider
task id or upload key when known), which the chaos runner counts and charts.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The wire faults a reply may carry (local/simulators/core/http.py acts them out).
HANG = "hang"  # read the request, answer nothing, close after `seconds`
RESET = "reset"  # read the request, close the connection with a TCP reset
TRUNCATE = "truncate"  # announce the whole length, send `cut_at` bytes, close
DRIP = "drip"  # send the body in small chunks spread over `seconds`


@dataclass(frozen=True)
class WireFault:
    """How a reply goes wrong on the wire, after the route has decided what to answer."""

    kind: str
    seconds: float = 0.0
    cut_at: int = 0
    declared_length: int | None = None  # a Content-Length other than the body's


@dataclass(frozen=True)
class FaultRates:
    """The probability of each fault per request (create call, status read, webhook, video
    GET), and the figures that shape them. All rates 0: no fault."""

    create_429: float = 0.0
    create_500: float = 0.0
    create_503: float = 0.0
    create_timeout: float = 0.0  # the task is made, the answer never comes
    create_reset: float = 0.0  # the connection is reset before the task is made
    status_429: float = 0.0
    status_500: float = 0.0
    status_503: float = 0.0
    status_timeout: float = 0.0
    status_reset: float = 0.0
    webhook_drop: float = 0.0  # per task: none of its webhooks is sent
    webhook_triplicate: float = 0.0  # per webhook: delivered three times
    webhook_reorder: float = 0.0  # per task: its progress webhook arrives after its completion
    webhook_late: float = 0.0  # per webhook: delivered after `late_seconds`
    webhook_unknown_task: float = 0.0  # per task: a signed webhook for a task we never sent
    video_truncated: float = 0.0
    video_slow: float = 0.0
    video_wrong_type: float = 0.0
    video_oversized: float = 0.0
    retry_after: int = 1  # seconds, with every injected 429
    hang_seconds: float = 3.0  # longer than the pipeline's provider timeout
    late_seconds: float = 8.0  # longer than the reconciler's threshold
    slow_seconds: float = 4.0  # how long a slow video takes to send
    oversized_bytes: int = 3 * 1024**3  # the Content-Length an oversized video claims

    def __post_init__(self) -> None:
        for name in self.kinds():
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {name} must be between 0 and 1, not {value}")

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """The fault kinds (every field that is a rate)."""
        return tuple(
            f.name for f in fields(cls) if f.name.split("_")[0] in ("create", "status", "webhook", "video")
        )


def stream_seed(*parts: object) -> int:
    """A 64-bit seed from the parts (stable across processes, unlike hash())."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class FaultLog:
    """Appends one JSON line per fault injected; thread- and process-safe for short lines
    (one `write` on a file opened for appending)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, kind: str, **context: object) -> None:
        if self._path is None:
            return
        line = json.dumps({"kind": kind, "at": time.time(), **context}, default=str) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as log:
            log.write(line)


class FaultDraws:
    """Seeded draws of one simulator's faults: one stream per kind."""

    def __init__(self, rates: FaultRates, *, seed: int, route: str, log: FaultLog) -> None:
        self.rates = rates
        self._route = route
        self._log = log
        self._lock = threading.Lock()
        self._streams = {kind: random.Random(stream_seed(seed, route, kind)) for kind in rates.kinds()}  # noqa: S311

    def hit(self, kind: str, **context: object) -> bool:
        """Whether fault `kind` strikes now (logged when it does)."""
        struck = self.drew(kind)
        if struck:
            self.note(kind, **context)
        return struck

    def drew(self, kind: str) -> bool:
        """Whether fault `kind` strikes now, not logged: for a fault that may never take
        effect, logged by `note()` when it does."""
        rate = float(getattr(self.rates, kind))
        if rate <= 0.0:
            return False
        with self._lock:
            return self._streams[kind].random() < rate

    def first(self, kinds: tuple[str, ...], **context: object) -> str | None:
        """The first of `kinds` that strikes now, each drawn in order; None if none does."""
        for kind in kinds:
            if self.hit(kind, **context):
                return kind
        return None

    def note(self, kind: str, **context: object) -> None:
        """Log a fault that happens now (drawn earlier, like a progress webhook held back)."""
        self._log.record(kind, source="provider", route=self._route, **context)


NO_FAULTS = FaultRates()
CREATE_ERRORS = ("create_429", "create_500", "create_503", "create_timeout", "create_reset")
STATUS_ERRORS = ("status_429", "status_500", "status_503", "status_timeout", "status_reset")
VIDEO_FAULTS = ("video_truncated", "video_slow", "video_wrong_type", "video_oversized")


def upload_key(body: object) -> str | None:
    """The object key an image URL in a create body points at (`incoming/...`, path-style
    presigned URL), so a provider-side fault can be told apart per upload; None if none."""
    if isinstance(body, dict):
        values: list[object] = list(body.values())
    elif isinstance(body, list):
        values = list(body)
    else:
        values = [body]
    for value in values:
        if isinstance(value, str) and value.startswith("http"):
            path = unquote(urlsplit(value).path)
            bucket_and_key = path.lstrip("/").split("/", 1)
            if len(bucket_and_key) == 2 and "/" in bucket_and_key[1]:
                return bucket_and_key[1]
        elif isinstance(value, dict | list):
            found = upload_key(value)
            if found is not None:
                return found
    return None
