"""The daily budget guard, which no provider has: a cap on the estimated spend per UTC day.

Each paid submission first reserves its estimate on the day's counter, one item in the
task table (`task_id` = `budget#<YYYY-MM-DD>`, outside both of its indexes, expiring
with `expires_at`), with ONE conditional UpdateItem: `ADD spent :cost` only if
`spent <= cap - cost`. DynamoDB applies each update atomically, so concurrent
submissions never take the day past its cap, not even by one task. A reservation the
provider did not use (it refused the task, or could not take it now) is given back.

Cap 0 is no cap: no call at all. A task with no estimate (a route with no published
price) is not counted (docs/decisions.md, 39).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from i2v.errors import PipelineError

ITEM_PREFIX = "budget#"
# How long a day's counter is kept after the day: long enough to look back at a month.
_KEEP_SECONDS = 35 * 86_400
_MILL = Decimal("0.001")

OverBudgetAction = Literal["wait", "reject"]


@dataclass(frozen=True)
class BudgetConfig:
    daily_usd: float = 0.0
    """The cap on a UTC day's estimated spend; 0 switches the guard off."""
    over_budget: OverBudgetAction = "wait"

    @property
    def enabled(self) -> bool:
        return self.daily_usd > 0


@dataclass(frozen=True)
class Reservation:
    day: str
    cost: Decimal
    spent_usd: float
    """The day's counter after this reservation."""


class OverBudget(PipelineError):
    """The day's budget cannot take this task's estimate: it waits for the next day or is
    rejected, as the stack's OverBudgetAction says. Nothing was paid."""

    code = "BUDGET_EXCEEDED"

    def __init__(self, *, cap: Decimal, spent: Decimal, cost: Decimal, resets_at: datetime) -> None:
        super().__init__(
            f"the daily budget of {_money(cap)} (UTC day {resets_at.date() - timedelta(days=1)}) cannot"
            f" take this task: {_money(spent)} is already reserved today and its estimate is"
            f" {_money(cost)}; the budget resets at {resets_at.isoformat().replace('+00:00', 'Z')}"
        )
        self.cap = cap
        self.spent = spent
        self.cost = cost
        self.resets_at = resets_at


def day_of(now: float) -> tuple[str, datetime]:
    """The UTC day of `now` and when the next one starts."""
    start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start.date().isoformat(), start + timedelta(days=1)


class Budget:
    def __init__(self, dynamodb_client: Any, table_name: str, config: BudgetConfig) -> None:
        self._db = dynamodb_client
        self._table = table_name
        self.config = config

    def reserve(self, cost_usd: float | None, *, now: float) -> Reservation | None:
        """Reserve `cost_usd` on today's counter; None when nothing needs reserving (no cap,
        or no estimate). Raises OverBudget when the day cannot take it."""
        if not self.config.enabled or cost_usd is None:
            return None
        cap = _usd(self.config.daily_usd)
        cost = _usd(cost_usd)
        day, next_day = day_of(now)
        if cost > cap:
            raise OverBudget(cap=cap, spent=Decimal(0), cost=cost, resets_at=next_day)
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key={"task_id": {"S": ITEM_PREFIX + day}},
                UpdateExpression="ADD spent :cost SET expires_at = if_not_exists(expires_at, :expires)",
                ConditionExpression="attribute_not_exists(spent) OR spent <= :limit",
                ExpressionAttributeValues={
                    ":cost": {"N": str(cost)},
                    ":limit": {"N": str(cap - cost)},
                    ":expires": {"N": str(int(next_day.timestamp()) + _KEEP_SECONDS)},
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._db.exceptions.ConditionalCheckFailedException as refused:
            spent = Decimal(refused.response.get("Item", {}).get("spent", {}).get("N", "0"))
            raise OverBudget(cap=cap, spent=spent, cost=cost, resets_at=next_day) from refused
        spent = Decimal(response["Attributes"]["spent"]["N"])
        return Reservation(day=day, cost=cost, spent_usd=float(spent))

    def refund(self, reservation: Reservation | None) -> None:
        """Give back a reservation the provider did not use, on the day it was made."""
        if reservation is None:
            return
        self._db.update_item(
            TableName=self._table,
            Key={"task_id": {"S": ITEM_PREFIX + reservation.day}},
            UpdateExpression="ADD spent :refund",
            ExpressionAttributeValues={":refund": {"N": str(-reservation.cost)}},
        )

    def spent(self, day: str) -> float:
        """A day's counter (what the CLI and the tests read)."""
        item = self._db.get_item(
            TableName=self._table, Key={"task_id": {"S": ITEM_PREFIX + day}}, ConsistentRead=True
        ).get("Item")
        return float(item["spent"]["N"]) if item and "spent" in item else 0.0


def _money(amount: Decimal) -> str:
    """Dollars with cents, and mills only when there are some: $2.10, $0.075."""
    mills = amount.quantize(_MILL)
    cents = mills.quantize(Decimal("0.01"))
    return f"${cents if cents == mills else mills}"


def _usd(amount: float) -> Decimal:
    # Estimates have three decimals (RouteSettings.estimate_cost_usd): counted exactly.
    return Decimal(repr(amount)).quantize(_MILL)
