"""Output: rich tables for people, JSON (stable keys) for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from i2v_cli.values import iso

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from i2v.domain import Task

# The callback token's hash and the current owner are the pipeline's own bookkeeping.
_INTERNAL_FIELDS = {"token_hash", "owner", "lease_until"}
_WHOLE_COLUMNS = frozenset({"task", "status"})
_STATUS_STYLES = {"SUCCEEDED": "green", "FAILED": "red", "REJECTED": "red", "TIMED_OUT": "red"}


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def emit_json(data: Any) -> None:
    import typer

    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False))


def task_dict(task: Task) -> dict[str, Any]:
    return task.model_dump(mode="json", exclude=_INTERNAL_FIELDS)


def styled_status(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=_STATUS_STYLES.get(status, "yellow"))


def add_row(grid: Table, *cells: str | Text, style: str | None = None) -> None:
    """A row whose text is shown as it is: keys and messages are not rich markup."""
    from rich.text import Text

    grid.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), style=style)


def table(title: str | None, columns: Sequence[str]) -> Table:
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
    for column in columns:
        # Ids and short values stay whole (a task id is copied from the terminal); keys fold.
        grid.add_column(column, overflow="fold", no_wrap=column in _WHOLE_COLUMNS)
    return grid


def task_detail(task: Task) -> Table:
    """One task, field by field."""
    from rich.table import Table

    grid = Table(show_header=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("task", task.task_id),
        ("status", styled_status(task.status.value)),
        ("source", f"s3://{task.source.bucket}/{task.source.key}"),
        ("route", task.provider.name),
        ("provider task", task.provider.task_id or "-"),
        ("options", _options(task)),
        ("received", iso(task.received_at)),
        ("submitted", iso(task.submitted_at)),
        ("finished", iso(task.finished_at)),
        ("estimated cost", _usd(task.estimated_cost_usd)),
    ]
    if task.video:
        rows.append(("video", f"s3://{task.video.bucket}/{task.video.key} ({task.video.size:,} bytes)"))
    if task.error:
        rows.append(("error", f"{task.error.code}: {task.error.message}"))
    elif task.last_error:
        rows.append(("last error", f"{task.last_error.code}: {task.last_error.message}"))
    from i2v.attempts import with_end

    attempts = with_end(task)
    if attempts:
        rows.append(("attempts", "; ".join(f"{a.route} {a.outcome.value}" for a in attempts)))
    for name, value in rows:
        add_row(grid, name, value)
    return grid


def tasks_table(title: str, tasks: Iterable[Task]) -> Table:
    grid = table(title, ["task", "status", "route", "received", "source key", "error"])
    for task in tasks:
        add_row(
            grid,
            task.task_id,
            styled_status(task.status.value),
            task.provider.name,
            iso(task.received_at),
            task.source.key,
            task.error.code if task.error else "",
        )
    return grid


def _options(task: Task) -> str:
    options = task.options
    parts = [options.resolution, f"{options.duration} s"]
    if options.model:
        parts.append(f"model {options.model}")
    if options.prompt:
        parts.append(repr(options.prompt if len(options.prompt) <= 60 else options.prompt[:57] + "..."))
    return ", ".join(parts)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def audit_report(found: dict[str, Any], since: str) -> Group:
    """The audit's counts, then each finding on a line."""
    from rich.console import Group
    from rich.text import Text

    grid = table(f"audit of the uploads since {since}", ["finding", "found", "repaired"])
    for name, count in found["counts"].items():
        add_row(grid, name.replace("_", " "), str(count), str(found["repaired"][name]))
    lines: list[str] = []
    for item in found["uploads_without_task"]:
        what = "re-sent" if item["repaired"] else (item["held_back"] or "not repaired")
        lines.append(f"lost upload {item['key']}: task {item['task_id']} ({what})")
    for item in found["tasks_without_video"]:
        lines.append(f"task {item['task_id']} SUCCEEDED without its video {item['video_key']}")
    for item in found["unnotified"]:
        what = "re-published" if item["repaired"] else "still pending"
        lines.append(f"task {item['task_id']} {item['status']}: its notification {what}")
    lines.append(f"{found['listed']} objects listed in {found['pages']} pages, {found['checked']} looked up")
    return Group(grid, *(Text(line) for line in lines))
