"""The task table: every state change is one conditional write.

Conditions come from the lifecycle table (i2v/tasks/lifecycle.py), so a duplicate, late
or out-of-order event fails them and is acknowledged as a no-op: no second video, no
state going backwards. A write whose condition fails returns the item as it was
(`ReturnValuesOnConditionCheckFailure`), so telling "not allowed" from "not yours" from
"no such task" costs no read: a happy task costs writes only (docs/decisions.md, 20).

Open tasks carry `open_shard`/`open_since`, the keys of the sparse `open-tasks` index the
reconciler queries; the write that ends a task removes them. A terminal task whose
notification could not be published is put back (`reopen_for_notification`), so the
reconciler sends it again. A DEFERRED task's `open_since` is when it may be submitted
again (`deferred_until`), so the reconciler meets it only then.

Each provider attempt's answer is appended to the task's `attempts` in the write that
records it (i2v/attempts.py): no write of its own.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from i2v.attempts import Attempt
from i2v.domain import TERMINAL_STATES, Task, TaskStatus
from i2v.tasks.lifecycle import entered_from

OPEN_INDEX = "open-tasks"
OPEN_SHARD = "OPEN"
SECONDS_PER_DAY = 86_400
_OPEN_KEYS = ("open_shard", "open_since")

# When each state was entered, for timings in notifications.
_ENTERED_AT = {
    TaskStatus.SUBMITTED: "submitted_at",
    TaskStatus.RUNNING: "running_at",
    TaskStatus.FINALIZING: "completed_at",
}


@dataclass(frozen=True)
class Write:
    """What a conditional write did: the task after it, or the task that refused it."""

    task: Task | None
    before: Task | None = None

    @property
    def applied(self) -> bool:
        return self.task is not None


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def token_hash_matches(task: Task | None, token_hash: str) -> bool:
    """Whether a refused write was refused for its state rather than its token."""
    return (
        task is not None and task.token_hash is not None and hmac.compare_digest(task.token_hash, token_hash)
    )


class TaskStore:
    def __init__(self, dynamodb_client: Any, table_name: str, *, retention_days: int = 90) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._db = dynamodb_client
        self._table = table_name
        self._retention_seconds = retention_days * SECONDS_PER_DAY
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    # -- reads (operators, the reconciler, and callbacks that change nothing) ----------

    def get(self, task_id: str) -> Task | None:
        response = self._db.get_item(
            TableName=self._table, Key={"task_id": {"S": task_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return self._task(item) if item else None

    def list_open(self, *, older_than: float, limit: int = 100) -> Iterator[Task]:
        """Open tasks (and terminal ones whose notification is pending) unchanged since `older_than`."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "open_shard = :shard AND open_since < :before",
            "ExpressionAttributeValues": {
                ":shard": {"S": OPEN_SHARD},
                ":before": {"N": repr(older_than)},
            },
            "Limit": min(limit, 100),
        }
        returned = 0
        while returned < limit:
            page = self._db.query(**kwargs)
            for item in page.get("Items", []):
                yield self._task(item)
                returned += 1
                if returned >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- submission --------------------------------------------------------------------

    def create(self, task: Task, *, lease_until: float) -> Write:
        """Claim a new task, its callback token's hash included; refused when the id is taken."""
        item = task.model_dump(mode="json", exclude_none=True)
        item |= {
            "lease_until": lease_until,
            "submit_attempts": 1,
            "open_shard": OPEN_SHARD,
            "open_since": task.updated_at,
            "source_uri": f"s3://{task.source.bucket}/{task.source.key}",
        }
        try:
            self._db.put_item(
                TableName=self._table,
                Item=self._serialize(item),
                ConditionExpression="attribute_not_exists(task_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._db.exceptions.ConditionalCheckFailedException as refused:
            return Write(None, self._refusing_task(refused))
        return Write(task.model_copy(update={"submit_attempts": 1, "lease_until": lease_until}))

    def claim_submission(
        self,
        task_id: str,
        *,
        owner: str,
        token_hash: str,
        now: float,
        lease_until: float,
        route: str,
        estimated_cost_usd: float | None = None,
    ) -> Task | None:
        """Re-claim a task whose earlier submission was released (a provider outage), with a
        fresh callback token: the old one was never given to a provider that accepted it.
        `route` is where this attempt goes (another one only after a confirmed failure)."""
        return self._update(
            task_id,
            condition="#status = :received AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            values={":received": TaskStatus.RECEIVED.value, ":now": now},
            set_={
                "lease_until": lease_until,
                "owner": owner,
                "token_hash": token_hash,
                "updated_at": now,
                "provider.name": route,
                "estimated_cost_usd": estimated_cost_usd,
            },
            add={"submit_attempts": 1},
            remove=["released"],
        ).task

    def mark_submitted(
        self, task_id: str, *, provider_task_id: str, now: float, attempt: Attempt | None = None
    ) -> Task | None:
        """Record the provider's task id (and the accepted `attempt`); RECEIVED becomes SUBMITTED.

        A fast provider may have called back already (the task is RUNNING or further);
        then only the provider's id, the submission time and the attempt are recorded.
        """
        fields = {"provider.task_id": provider_task_id, "submitted_at": now}
        written = self.move(
            task_id, TaskStatus.SUBMITTED, now=now, set_=fields, remove=["lease_until"], attempt=attempt
        )
        if written.applied or written.before is None:
            return written.task
        return self._update(
            task_id,
            condition="attribute_exists(task_id)",
            set_={"submitted_at": now},
            set_if_absent={"provider.task_id": provider_task_id},
            remove=["lease_until"],
            attempt=attempt,
        ).task

    def release_submission(
        self,
        task_id: str,
        *,
        owner: str,
        error: Mapping[str, str],
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Give a submission the provider confirmed it did not take (a refusal, a 429 or
        5xx answer, no connection) back to the queue's retries; `released` says a retry
        may go to another route."""
        self._update(
            task_id,
            condition="#status = :received AND #owner = :owner",
            values={":received": TaskStatus.RECEIVED.value, ":owner": owner},
            set_={"last_error": dict(error), "updated_at": now, "released": True},
            remove=["lease_until"],
            attempt=attempt,
        )

    def hold_unconfirmed(
        self, task_id: str, *, error: Mapping[str, str], now: float, attempt: Attempt | None = None
    ) -> Task | None:
        """A submission sent but never answered: RECEIVED becomes UNCONFIRMED, never
        submitted again; a webhook or the reconciler settles it."""
        return self.move(
            task_id,
            TaskStatus.UNCONFIRMED,
            now=now,
            set_={"last_error": dict(error)},
            remove=["lease_until"],
            attempt=attempt,
        ).task

    # -- the budget's wait -------------------------------------------------------------

    def defer(self, task_id: str, *, owner: str, until: float, now: float, error: Mapping[str, str]) -> Write:
        """Park a claimed task over the day's budget until `until`; its place on the
        open-tasks index is that time, so the reconciler finds it when it is due."""
        return self._update(
            task_id,
            condition="#status = :received AND #owner = :owner",
            values={":received": TaskStatus.RECEIVED.value, ":owner": owner},
            set_={
                "status": TaskStatus.DEFERRED.value,
                "deferred_until": until,
                "open_since": until,
                "updated_at": now,
                "last_error": dict(error),
            },
            remove=["lease_until"],
        )

    def resume_deferred(
        self, task_id: str, *, owner: str, token_hash: str, now: float, lease_until: float
    ) -> Write:
        """Claim a deferred task whose day has come for this message: back to RECEIVED, to
        be submitted; refused when it is not due or another message has it."""
        condition, values = self._entered_from(TaskStatus.RECEIVED)
        return self._update(
            task_id,
            condition=f"{condition} AND deferred_until <= :now",
            values=values | {":now": now},
            set_={
                "status": TaskStatus.RECEIVED.value,
                "owner": owner,
                "token_hash": token_hash,
                "lease_until": lease_until,
                "updated_at": now,
                "open_since": now,
                "resumed_at": now,
            },
            add={"submit_attempts": 1},
            remove=["deferred_until"],
        )

    # -- progress ----------------------------------------------------------------------

    def move(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        now: float,
        token_hash: str | None = None,
        route: str | None = None,
        provider_task_id: str | None = None,
        set_: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        attempt: Attempt | None = None,
    ) -> Write:
        """Move an open task to the open state `to`, if the lifecycle allows it from where it is.

        With `token_hash`, the write also authenticates a callback: it applies only to the
        task whose token that is. With `route`, only to a task on that route (a webhook
        names the route that signed it). With `provider_task_id`, only to the task of that
        provider task (recorded then, if the submit step has not done it yet).
        """
        if to in TERMINAL_STATES:
            raise ValueError(f"{to.value} is terminal: use end()")
        condition, values = self._entered_from(to)
        fields: dict[str, Any] = {"status": to.value, "updated_at": now, "open_since": now, **(set_ or {})}
        first_time: dict[str, Any] = {}
        if to in _ENTERED_AT:
            first_time[_ENTERED_AT[to]] = now
        if token_hash is not None:
            condition += " AND token_hash = :token_hash"
            values[":token_hash"] = token_hash
        if route is not None:
            condition += " AND #provider.#name = :route"
            values[":route"] = route
        if provider_task_id is not None:
            condition += (
                " AND (attribute_not_exists(#provider.#task_id) OR #provider.#task_id = :provider_task_id)"
            )
            values[":provider_task_id"] = provider_task_id
            first_time["provider.task_id"] = provider_task_id
        first_time = {field: value for field, value in first_time.items() if field not in fields}
        return self._update(
            task_id,
            condition=condition,
            values=values,
            set_=fields,
            set_if_absent=first_time,
            remove=remove,
            attempt=attempt,
        )

    def hand_over(
        self, task_id: str, *, from_owner: str, to_owner: str, now: float, outcome: TaskStatus | None = None
    ) -> Task | None:
        """Give a FINALIZING task whose order seems lost to a new order (the old one can no
        longer end it); `outcome` replaces the one it was to record (a deadline passed)."""
        fields: dict[str, Any] = {"owner": to_owner, "updated_at": now, "open_since": now}
        if outcome is not None:
            fields["outcome"] = outcome.value
        return self._update(
            task_id,
            condition="#status = :finalizing AND #owner = :owner",
            values={":finalizing": TaskStatus.FINALIZING.value, ":owner": from_owner},
            set_=fields,
        ).task

    # -- the end -----------------------------------------------------------------------

    def end(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        owner: str,
        now: float,
        set_: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
    ) -> Write:
        """The one write that ends a task: allowed from the lifecycle's states, by its owner
        only; the task leaves the open-tasks index in the same write."""
        if to not in TERMINAL_STATES:
            raise ValueError(f"{to.value} is not terminal: use move()")
        condition, values = self._entered_from(to)
        values[":owner"] = owner
        fields = {
            "status": to.value,
            "updated_at": now,
            "finished_at": now,
            "expires_at": int(now) + self._retention_seconds,
            **(set_ or {}),
        }
        return self._update(
            task_id,
            condition=f"{condition} AND #owner = :owner",
            values=values,
            set_=fields,
            remove=[*_OPEN_KEYS, "lease_until", "outcome"],
            attempt=attempt,
        )

    def reopen_for_notification(self, task_id: str, *, now: float) -> Task | None:
        """A terminal task whose notification failed goes back on the reconciler's index."""
        return self._update(
            task_id,
            condition=self._terminal_condition(),
            values=self._terminal_values(),
            set_={"notify_pending": True, "open_shard": OPEN_SHARD, "open_since": now},
        ).task

    def mark_notified(self, task_id: str) -> Task | None:
        """A pending notification is out: the task leaves the open-tasks index."""
        return self._update(
            task_id,
            condition=f"({self._terminal_condition()}) AND notify_pending = :true",
            values=self._terminal_values() | {":true": True},
            remove=["notify_pending", *_OPEN_KEYS],
        ).task

    # -- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _entered_from(to: TaskStatus) -> tuple[str, dict[str, Any]]:
        allowed = sorted(s.value for s in entered_from(to))
        names = [f":from{i}" for i in range(len(allowed))]
        return f"#status IN ({', '.join(names)})", dict(zip(names, allowed, strict=True))

    @staticmethod
    def _terminal_condition() -> str:
        return f"#status IN ({', '.join(f':t{i}' for i in range(len(TERMINAL_STATES)))})"

    @staticmethod
    def _terminal_values() -> dict[str, Any]:
        return {f":t{i}": s for i, s in enumerate(sorted(s.value for s in TERMINAL_STATES))}

    def _update(
        self,
        task_id: str,
        *,
        condition: str,
        values: Mapping[str, Any] | None = None,
        set_: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        add: Mapping[str, int] | None = None,
        set_if_absent: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
    ) -> Write:
        expression = _UpdateExpression(values)
        if attempt is not None:
            expression.append("attempts", attempt.model_dump(mode="json", exclude_none=True))
        for field, value in (set_ or {}).items():
            expression.set(field, value)
        for field, value in (set_if_absent or {}).items():
            expression.set_if_absent(field, value)
        for field in remove:
            expression.remove(field)
        for field, amount in (add or {}).items():
            expression.add(field, amount)
        update = expression.render()
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"task_id": {"S": task_id}},
            "UpdateExpression": update,
            "ConditionExpression": f"attribute_exists(task_id) AND ({condition})",
            "ExpressionAttributeNames": expression.names_used_in(update, condition),
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if expression.values:
            kwargs["ExpressionAttributeValues"] = {
                k: self._serializer.serialize(_to_dynamo(v)) for k, v in expression.values.items()
            }
        try:
            response = self._db.update_item(**kwargs)
        except self._db.exceptions.ConditionalCheckFailedException as refused:
            return Write(None, self._refusing_task(refused))
        return Write(self._task(response["Attributes"]))

    def _refusing_task(self, refused: Any) -> Task | None:
        item = refused.response.get("Item")
        return self._task(item) if item else None

    def _serialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._serializer.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}

    def _task(self, item: Mapping[str, Any]) -> Task:
        plain = {k: _from_dynamo(self._deserializer.deserialize(v)) for k, v in item.items()}
        return Task.model_validate(plain)


class _UpdateExpression:
    """Builds one UpdateExpression, every attribute name behind a placeholder
    (`status` and `source` are DynamoDB reserved words)."""

    def __init__(self, values: Mapping[str, Any] | None) -> None:
        # Placeholders a condition may use even when the update does not touch them.
        self.names: dict[str, str] = {
            "#status": "status",
            "#owner": "owner",
            "#provider": "provider",
            "#task_id": "task_id",
            "#name": "name",
        }
        self.values: dict[str, Any] = dict(values or {})
        self._set: dict[str, str] = {}
        self._remove: list[str] = []
        self._add: list[str] = []

    def _path(self, field: str) -> str:
        parts = []
        for part in field.split("."):
            self.names[f"#{part}"] = part
            parts.append(f"#{part}")
        return ".".join(parts)

    def _value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, field: str, value: Any) -> None:
        if value is None:
            self.remove(field)
        else:
            self._set[field] = f"{self._path(field)} = {self._value(value)}"

    def set_if_absent(self, field: str, value: Any) -> None:
        path = self._path(field)
        self._set[field] = f"{path} = if_not_exists({path}, {self._value(value)})"

    def append(self, field: str, item: Any) -> None:
        path = self._path(field)
        empty, items = self._value([]), self._value([item])
        self._set[field] = f"{path} = list_append(if_not_exists({path}, {empty}), {items})"

    def remove(self, field: str) -> None:
        if field not in self._set and self._path(field) not in self._remove:
            self._remove.append(self._path(field))

    def add(self, field: str, amount: int) -> None:
        self._add.append(f"{self._path(field)} {self._value(amount)}")

    def names_used_in(self, *expressions: str) -> dict[str, str]:
        used = " ".join(expressions)
        return {k: v for k, v in self.names.items() if k in used}

    def render(self) -> str:
        clauses = []
        if self._set:
            clauses.append("SET " + ", ".join(self._set.values()))
        if self._remove:
            clauses.append("REMOVE " + ", ".join(self._remove))
        if self._add:
            clauses.append("ADD " + ", ".join(self._add))
        return " ".join(clauses)
