"""How a simulator misbehaves on purpose: the faults a test injects, and the rate window that
refuses status reads past a route's documented rate."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Self

from local.simulators.core.http import is_int, is_number


@dataclass
class Faults:
    """Faults to inject; counts apply to the next N create calls, status reads or tasks.

    A route narrows `ERROR_STATUSES` to the statuses it has error bodies for (the ones
    `submit_errors` and `status_errors` may hold).
    """

    ERROR_STATUSES: ClassVar[frozenset[int]] = frozenset(range(400, 600))

    submit_errors: list[int] = field(default_factory=list)
    status_errors: list[int] = field(default_factory=list)
    retry_after: int | None = None  # sent with injected 429s, on create calls and status reads
    drop_webhooks: int = 0
    fail_tasks: int = 0
    duplicate_webhooks: bool = False
    webhook_delay: float = 0.0
    webhook_retries: int = 0

    def updated(self, changes: Mapping[str, object]) -> Self:
        """A copy with `changes` applied; ValueError names the first bad field."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        for name, value in changes.items():
            self._check(name, value)
        merged = replace(self, **changes)  # type: ignore[arg-type]
        merged.submit_errors = list(merged.submit_errors)
        merged.status_errors = list(merged.status_errors)
        return merged

    def _check(self, name: str, value: object) -> None:
        if name in ("submit_errors", "status_errors"):
            allowed = self.ERROR_STATUSES
            valid = isinstance(value, list) and all(is_int(v) and v in allowed for v in value)
            expected = f"a list of statuses among {sorted(allowed)}"
        elif name == "retry_after":
            valid = value is None or (is_int(value) and value >= 0)
            expected = "null or a whole number of seconds >= 0"
        elif name == "duplicate_webhooks":
            valid = isinstance(value, bool)
            expected = "true or false"
        elif name == "webhook_delay":
            valid = is_number(value) and value >= 0
            expected = "a number of seconds >= 0"
        else:
            valid = is_int(value) and value >= 0
            expected = "an integer >= 0"
        if not valid:
            raise ValueError(f"{name} must be {expected}")


class RateWindow:
    """Admits at most `rate` events in any one-second window (thread-safe)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Count one event if it fits the window; False (not counted) when it does not."""
        now = time.monotonic()
        with self._lock:
            while self._admitted and now - self._admitted[0] >= 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self._rate:
                return False
            self._admitted.append(now)
            return True
