"""The task table: every state change is one conditional UpdateItem.

The condition names the states a change may come from, so a duplicate, late or
out-of-order event fails it and is acknowledged as a no-op: no second video, no state
going backwards.

Open tasks carry `open_shard`/`open_since`, the keys of the sparse `open-tasks` index the
reconciler queries. A terminal task keeps them until its notification is published
(`mark_notified`), so an outcome whose notification failed is found and sent again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from i2v.domain import (
    AWAITING_PROVIDER,
    TERMINAL_STATES,
    ErrorInfo,
    Options,
    SourceObject,
    Task,
    TaskStatus,
    VideoObject,
)

OPEN_INDEX = "open-tasks"
OPEN_SHARD = "OPEN"
SECONDS_PER_DAY = 86_400

# When each state was entered, for timings in notifications.
_ENTERED_AT = {
    TaskStatus.SUBMITTED: "submitted_at",
    TaskStatus.RUNNING: "running_at",
    TaskStatus.FINALIZING: "completed_at",
}


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


class TaskStore:
    def __init__(self, dynamodb_client: Any, table_name: str, *, retention_days: int = 90) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._db = dynamodb_client
        self._table = table_name
        self._retention_seconds = retention_days * SECONDS_PER_DAY
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    # -- reads -------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        response = self._db.get_item(
            TableName=self._table, Key={"task_id": {"S": task_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return self._task(item) if item else None

    def list_open(self, *, older_than: float, limit: int = 100) -> Iterator[Task]:
        """Open tasks (and terminal ones not yet notified) unchanged since `older_than`."""
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

    def create(self, task: Task, *, lease_until: float) -> bool:
        """Claim a new task; False when the id is already taken (a duplicate event)."""
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
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim_submission(self, task_id: str, *, now: float, lease_until: float) -> Task | None:
        """Re-claim a task whose earlier submission was released (a provider outage)."""
        return self._update(
            task_id,
            condition="#status = :received AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            values={":received": TaskStatus.RECEIVED.value, ":now": now},
            set_={"lease_until": lease_until, "updated_at": now},
            add={"submit_attempts": 1},
        )

    def prepare_submission(
        self,
        task_id: str,
        *,
        source: SourceObject,
        options: Options,
        token_hash: str,
        estimated_cost_usd: float | None,
        now: float,
    ) -> Task | None:
        """Record what will be sent, before the provider can call back."""
        return self._update(
            task_id,
            condition="#status = :received",
            values={":received": TaskStatus.RECEIVED.value},
            set_={
                "source": source.model_dump(mode="json", exclude_none=True),
                "options": options.model_dump(mode="json", exclude_none=True),
                "token_hash": token_hash,
                "estimated_cost_usd": estimated_cost_usd,
                "updated_at": now,
            },
        )

    def mark_submitted(self, task_id: str, *, provider_task_id: str, now: float) -> Task | None:
        """Record the provider's task id; RECEIVED becomes SUBMITTED.

        A fast provider may have called back already (the task is RUNNING or further);
        then only the provider's id and the submission time are recorded.
        """
        fields = {"provider.task_id": provider_task_id, "submitted_at": now}
        task = self.transition(
            task_id,
            TaskStatus.SUBMITTED,
            allowed_from=[TaskStatus.RECEIVED],
            now=now,
            set_=fields,
            remove=["lease_until"],
        )
        if task is None:
            task = self._update(
                task_id, condition="attribute_exists(task_id)", set_=fields, remove=["lease_until"]
            )
        return task

    def release_submission(self, task_id: str, *, error: ErrorInfo, now: float) -> Task | None:
        """Give a failed submission back to the queue's retries."""
        return self._update(
            task_id,
            condition="#status = :received",
            values={":received": TaskStatus.RECEIVED.value},
            set_={"last_error": error.model_dump(), "updated_at": now},
            remove=["lease_until"],
        )

    # -- progress and outcome ----------------------------------------------------------

    def transition(
        self,
        task_id: str,
        to: TaskStatus,
        *,
        allowed_from: Iterable[TaskStatus],
        now: float,
        set_: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        extra_condition: str | None = None,
        extra_values: Mapping[str, Any] | None = None,
    ) -> Task | None:
        """Move a task to `to` if it is in one of `allowed_from`; None when it is not."""
        allowed = sorted({s.value for s in allowed_from})
        names = [f":from{i}" for i in range(len(allowed))]
        condition = f"#status IN ({', '.join(names)})"
        if extra_condition:
            condition = f"({condition}) AND ({extra_condition})"
        values: dict[str, Any] = dict(zip(names, allowed, strict=True)) | dict(extra_values or {})
        fields: dict[str, Any] = {"status": to.value, "updated_at": now, **(set_ or {})}
        if to in TERMINAL_STATES:
            fields |= {"finished_at": now, "expires_at": int(now) + self._retention_seconds}
            remove = [*remove, "lease_until", "lease_owner"]
        else:
            fields["open_since"] = now
            if to in _ENTERED_AT:
                fields.setdefault(_ENTERED_AT[to], now)
        return self._update(task_id, condition=condition, values=values, set_=fields, remove=remove)

    def claim_finalization(self, task_id: str, *, owner: str, now: float, lease_seconds: int) -> Task | None:
        """Take the exclusive right to download the video, for `lease_seconds`.

        Allowed from the states that await the provider, or from FINALIZING whose lease
        has expired (an earlier attempt died or gave up for now).
        """
        waiting = sorted(s.value for s in (TaskStatus.RECEIVED, *AWAITING_PROVIDER))
        names = [f":w{i}" for i in range(len(waiting))]
        return self._update(
            task_id,
            condition=(
                f"#status IN ({', '.join(names)}) OR "
                "(#status = :finalizing AND (attribute_not_exists(lease_until) OR lease_until < :now))"
            ),
            values=dict(zip(names, waiting, strict=True))
            | {":finalizing": TaskStatus.FINALIZING.value, ":now": now},
            set_={
                "status": TaskStatus.FINALIZING.value,
                "lease_owner": owner,
                "lease_until": now + lease_seconds,
                "updated_at": now,
                "open_since": now,
            },
            add={"finalize_attempts": 1},
            set_if_absent={"completed_at": now},
        )

    def complete(self, task_id: str, *, owner: str, video: VideoObject, now: float) -> Task | None:
        return self.transition(
            task_id,
            TaskStatus.SUCCEEDED,
            allowed_from=[TaskStatus.FINALIZING],
            now=now,
            set_={"video": video.model_dump(mode="json")},
            extra_condition="lease_owner = :owner",
            extra_values={":owner": owner},
        )

    def release_finalization(self, task_id: str, *, owner: str, error: ErrorInfo, now: float) -> Task | None:
        """Give up the lease after a transient failure, so the next attempt can start at once."""
        return self._update(
            task_id,
            condition="#status = :finalizing AND lease_owner = :owner",
            values={":finalizing": TaskStatus.FINALIZING.value, ":owner": owner},
            set_={"last_error": error.model_dump(), "updated_at": now},
            remove=["lease_until"],
        )

    def mark_notified(self, task_id: str, *, now: float) -> Task | None:
        """The outcome's notification is out: the task leaves the open index."""
        terminal = sorted(s.value for s in TERMINAL_STATES)
        names = [f":t{i}" for i in range(len(terminal))]
        return self._update(
            task_id,
            condition=f"#status IN ({', '.join(names)})",
            values=dict(zip(names, terminal, strict=True)),
            set_={"notified_at": now},
            remove=["open_shard", "open_since"],
        )

    # -- plumbing ----------------------------------------------------------------------

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
    ) -> Task | None:
        expression = _UpdateExpression(values)
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
        }
        if expression.values:
            kwargs["ExpressionAttributeValues"] = {
                k: self._serializer.serialize(_to_dynamo(v)) for k, v in expression.values.items()
            }
        try:
            response = self._db.update_item(**kwargs)
        except self._db.exceptions.ConditionalCheckFailedException:
            return None
        return self._task(response["Attributes"])

    def _serialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._serializer.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}

    def _task(self, item: Mapping[str, Any]) -> Task:
        plain = {k: _from_dynamo(self._deserializer.deserialize(v)) for k, v in item.items()}
        return Task.model_validate(plain)


class _UpdateExpression:
    """Builds one UpdateExpression, every attribute name behind a placeholder
    (`status` and `source` are DynamoDB reserved words)."""

    def __init__(self, values: Mapping[str, Any] | None) -> None:
        self.names: dict[str, str] = {"#status": "status"}
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
