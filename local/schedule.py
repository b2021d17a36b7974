"""An EventBridge schedule: invoke a function with a scheduled event every N seconds."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from local.dispatcher import Invocable
from local.lambda_runtime import FunctionError

log = logging.getLogger(__name__)

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """The period of a `rate(...)` schedule expression, in seconds."""
    match = _RATE.match(expression.strip())
    if match is None:
        raise ValueError(
            f"schedule {expression!r}: only rate(...) expressions run locally; "
            "give the local stack an interval"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def scheduled_event(*, rule_arn: str, region: str, account_id: str) -> dict[str, Any]:
    """What EventBridge sends a function for a scheduled rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleTimer:
    """Invokes `function` every `interval_seconds`, first after one interval."""

    def __init__(
        self,
        function: Invocable,
        *,
        interval_seconds: float,
        rule_arn: str,
        region: str,
        account_id: str,
    ) -> None:
        self._function = function
        self._interval = interval_seconds
        self._rule_arn = rule_arn
        self._region = region
        self._account_id = account_id
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{self._function.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking; wait up to `timeout` s for an invocation in progress."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: an invocation was still running at stop", self._function.name)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            event = scheduled_event(rule_arn=self._rule_arn, region=self._region, account_id=self._account_id)
            try:
                self._function.invoke(event)
            except FunctionError as error:
                log.warning("%s failed: %s", self._function.name, error)
