"""Cost: the estimated spend per route and resolution, from each task's estimated_cost_usd
(the route's price per second times the task's duration, at its resolution)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from i2v.domain import Task


@dataclass
class CostRow:
    route: str
    resolution: str
    tasks: int = 0
    """Tasks received (an upload rejected before any paid call included)."""
    submitted: int = 0
    """Tasks a provider took, or may have (UNCONFIRMED): the ones that can cost money."""
    succeeded: int = 0
    estimated_usd: float = 0.0
    """The estimates of the submitted tasks."""
    unpriced: int = 0
    """Submitted tasks with no estimate (their route has no published price)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"estimated_usd": round(self.estimated_usd, 4)}


def may_be_charged(task: Task) -> bool:
    """Whether a provider took the task (its id is known) or may have (never answered)."""
    from i2v.domain import TaskStatus

    unanswered = task.status is TaskStatus.UNCONFIRMED or (
        task.error is not None and task.error.code == "PROVIDER_OUTCOME_UNKNOWN"
    )
    return task.provider.task_id is not None or unanswered


def cost_by_route(tasks: Iterable[Task]) -> list[CostRow]:
    rows: dict[tuple[str, str], CostRow] = {}
    for task in tasks:
        key = (task.provider.name, task.options.resolution)
        row = rows.setdefault(key, CostRow(*key))
        row.tasks += 1
        if task.status.value == "SUCCEEDED":
            row.succeeded += 1
        if may_be_charged(task):
            row.submitted += 1
            if task.estimated_cost_usd is None:
                row.unpriced += 1
            else:
                row.estimated_usd += task.estimated_cost_usd
    return [rows[key] for key in sorted(rows)]


def charged_without_video(tasks: Iterable[Task]) -> list[dict[str, Any]]:
    """One row per provider attempt that may have been billed and brought no video, with
    what the provider's support asks for to credit it (i2v/attempts.py), oldest first."""
    from i2v.attempts import refund_rows

    rows = [row for task in tasks for row in refund_rows(task)]
    return sorted(rows, key=lambda row: (row["started_at"] or "", row["task_id"]))


def write_rows(rows: list[dict[str, Any]], output_format: str, out: IO[str]) -> None:
    """CSV (a header, then a row per attempt; the header alone when there are none) or a
    JSON array."""
    from i2v.attempts import REFUND_COLUMNS

    if output_format == "json":
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=REFUND_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
