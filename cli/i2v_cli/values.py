"""Values given on the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str, *, now: float) -> float:
    """Epoch seconds from `30m`, `2h`, `7d` (ago), an ISO 8601 date or time (UTC unless it
    says), or epoch seconds."""
    value = text.strip()
    relative = _RELATIVE.match(value.lower())
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 30m, 2h, 7d (ago), 2026-12-01, 2026-12-01T09:30:00Z "
            "or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
