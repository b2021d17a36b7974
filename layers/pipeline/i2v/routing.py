"""Which route a new upload goes to: the one it asks for, else the first configured route
whose breaker is closed. The breaker, which no provider offers, is shared by every
function through the task table (docs/decisions.md, 28).

A route's breaker opens when `threshold` failures to create a task (429, 5xx, no
connection, no answer) fall within `window_seconds`; while it is open, new tasks go to
the next configured route; after `cooldown_seconds` the route is tried again. Tasks
already accepted by a provider stay with it. One route configured: no breaker at all.

The state is one item per route (`task_id` = `route#<name>`, outside both of the table's
indexes): failures are counted with atomic ADDs, so concurrent functions agree. A
function re-reads a route's state at most every `cache_seconds`, so a busy stack reads
the table a few times a minute, not once per upload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from i2v.observability import logger

ITEM_PREFIX = "route#"


@dataclass(frozen=True)
class BreakerConfig:
    threshold: int = 5
    window_seconds: int = 60
    cooldown_seconds: int = 300
    cache_seconds: float = 5.0


@dataclass
class Breaker:
    """A per-route circuit breaker in DynamoDB."""

    dynamodb: Any
    table: str
    config: BreakerConfig
    clock: Callable[[], float] = time.time
    on_open: Callable[[str], None] = lambda route: None
    _seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    """route -> (when read, open until)"""

    def is_open(self, route: str) -> bool:
        now = self.clock()
        seen = self._seen.get(route)
        if seen is None or now - seen[0] > self.config.cache_seconds:
            item = self.dynamodb.get_item(
                TableName=self.table,
                Key={"task_id": {"S": ITEM_PREFIX + route}},
                ProjectionExpression="open_until",
                ConsistentRead=True,
            ).get("Item", {})
            seen = (now, float(item.get("open_until", {}).get("N", "0")))
            self._seen[route] = seen
        return now < seen[1]

    def _count(self, key: dict[str, Any], now: float) -> int:
        """This failure counted in the route's current window, or as the first of a new one;
        with concurrent functions exactly one of them starts the new window."""
        since = {":since": {"N": repr(now - self.config.window_seconds)}}
        errors = self.dynamodb.exceptions
        for _ in range(3):
            try:
                counted = self.dynamodb.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="ADD failures :one",
                    ConditionExpression="window_start > :since",
                    ExpressionAttributeValues={":one": {"N": "1"}, **since},
                    ReturnValues="UPDATED_NEW",
                )
                # (DynamoDB always returns the ADDed value; in-process moto, racing between
                # threads, sometimes does not: that failure then counts as one.)
                return int(counted.get("Attributes", {}).get("failures", {}).get("N", "1"))
            except errors.ConditionalCheckFailedException:
                pass
            try:
                self.dynamodb.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET failures = :one, window_start = :now",
                    ConditionExpression="attribute_not_exists(window_start) OR window_start <= :since",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":now": {"N": repr(now)}, **since},
                )
                return 1
            except errors.ConditionalCheckFailedException:
                continue  # another function started the window just now: count in it
        return 0

    def failure(self, route: str) -> None:
        """Count one failure to create a task on `route`; open its breaker at the threshold."""
        now = self.clock()
        key = {"task_id": {"S": ITEM_PREFIX + route}}
        failures = self._count(key, now)
        if failures < self.config.threshold:
            return
        until = now + self.config.cooldown_seconds
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET open_until = :until, failures = :zero, window_start = :now",
                ConditionExpression="attribute_not_exists(open_until) OR open_until < :now",
                ExpressionAttributeValues={
                    ":until": {"N": repr(until)},
                    ":zero": {"N": "0"},
                    ":now": {"N": repr(now)},
                },
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return  # another function opened it already
        self._seen[route] = (now, until)
        logger.warning(
            "route breaker opened: new tasks go to the next route",
            extra={"route": route, "failures": failures, "cooldown_seconds": self.config.cooldown_seconds},
        )
        self.on_open(route)


@dataclass(frozen=True)
class RouteChoice:
    """The stack's configured routes, primary first, and their shared breaker."""

    routes: tuple[str, ...]
    breaker: Breaker | None

    def pick(self) -> str:
        """The first route whose breaker is closed; the primary when every one is open."""
        if self.breaker is None or len(self.routes) == 1:
            return self.routes[0]
        for name in self.routes:
            if not self.breaker.is_open(name):
                return name
        return self.routes[0]

    def failed(self, route: str) -> None:
        if self.breaker is not None and len(self.routes) > 1 and route in self.routes:
            self.breaker.failure(route)
