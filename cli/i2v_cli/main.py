"""`i2v`: see and steer a HappyHorse pipeline, deployed (`--stack NAME`) or local (`--local`).

Commands build their collaborators from boto3 clients and the stack's outputs; they never
import i2v.wiring, which reads a Lambda's environment. Exit codes: i2v_cli/errors.py."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from i2v_cli.errors import CliError, Exit, WaitTimedOut
from i2v_cli.stack import DEFAULT_LOCAL_FILE

if TYPE_CHECKING:
    from i2v_cli.aws import Aws


class _Commands(TyperGroup):
    """Every command's CliError as one line on stderr and its exit code, not a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except CliError as error:
            from rich.markup import escape

            from i2v_cli.render import console

            console(stderr=True).print(f"[red]i2v: {escape(error.message)}[/red]")
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    name="i2v",
    cls=_Commands,
    help="See and steer a HappyHorse image-to-video pipeline (docs/operations.md, 'The i2v CLI').",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys).")]
SinceOption = Annotated[
    str,
    typer.Option("--since", help="From when: 30m, 2h, 7d (ago), 2026-12-01, an ISO time or epoch seconds."),
]


@dataclass(frozen=True)
class Target:
    stack: str | None
    local_file: Path | None
    region: str | None
    profile: str | None

    def connect(self) -> Aws:
        from i2v_cli.aws import connect

        return connect(
            stack_name=self.stack, local_file=self.local_file, region=self.region, profile=self.profile
        )


@app.callback()
def options(
    ctx: typer.Context,
    stack: Annotated[
        str | None, typer.Option("--stack", envvar="I2V_STACK", help="A deployed stack, by its name.")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", envvar="I2V_LOCAL", help="The local stack `make stack` runs.")
    ] = False,
    stack_file: Annotated[
        Path | None,
        typer.Option(
            "--stack-file",
            envvar="I2V_STACK_FILE",
            help=f"The local stack's file (default {DEFAULT_LOCAL_FILE}, with --local).",
        ),
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="The deployed stack's region.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="An AWS CLI profile.")] = None,
) -> None:
    local_file = stack_file or (DEFAULT_LOCAL_FILE if local else None)
    if stack and local_file:
        raise typer.BadParameter("a deployed stack or the local one, not both", param_hint="--stack")
    ctx.obj = Target(stack=stack, local_file=local_file, region=region, profile=profile)


def _aws(ctx: typer.Context) -> Aws:
    target: Target = ctx.obj
    return target.connect()


def _since(text: str) -> float:
    from i2v_cli.values import parse_since

    try:
        return parse_since(text, now=time.time())
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from None


# -- finding tasks --------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A task id, or an upload's key (incoming/... or s3://...).")],
    json_output: JsonOption = False,
) -> None:
    """A task by its id, or every task of an upload key (oldest first)."""
    from i2v_cli import render
    from i2v_cli.tasks import find_tasks

    found = find_tasks(_aws(ctx), target)
    if json_output:
        render.emit_json({"tasks": [render.task_dict(task) for task in found]})
        return
    out = render.console()
    if len(found) > 1:
        out.print(render.tasks_table(f"tasks of {found[0].source.key}: {len(found)}", found))
    out.print(render.task_detail(found[-1]))


class Status(StrEnum):
    """i2v.domain.TaskStatus, restated: `--help` does not import the pipeline (a test holds them equal)."""

    RECEIVED = "RECEIVED"
    DEFERRED = "DEFERRED"
    UNCONFIRMED = "UNCONFIRMED"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    FINALIZING = "FINALIZING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    TIMED_OUT = "TIMED_OUT"


@app.command("list")
def list_(
    ctx: typer.Context,
    statuses: Annotated[
        list[Status] | None,
        typer.Option("--status", case_sensitive=False, help="Only these statuses (repeat for more)."),
    ] = None,
    since: SinceOption = "24h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Tasks received since a time, newest first."""
    from i2v_cli import render
    from i2v_cli.tasks import list_tasks

    chosen = [s.value for s in statuses] if statuses else [s.value for s in Status]
    start = _since(since)
    found = list_tasks(_aws(ctx), statuses=chosen, since=start, limit=limit)
    if json_output:
        render.emit_json({"tasks": [render.task_dict(task) for task in found]})
        return
    render.console().print(render.tasks_table(f"tasks since {since}: {len(found)}", found))


# -- steering -------------------------------------------------------------------------------


@app.command()
def retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="A FAILED, TIMED_OUT or REJECTED task.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the new task to its end.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 900,
    json_output: JsonOption = False,
) -> None:
    """Run a failed task's upload through the submit path again.

    Every check runs again, on the object as it is now: retry once the input (its options
    sidecar, the stack's routes, the budget) has been fixed. The new task has its own id;
    retrying the same task twice makes one."""
    from i2v_cli import render
    from i2v_cli.tasks import RETRYABLE, wait_for_task
    from i2v_cli.tasks import retry as retry_task

    aws = _aws(ctx)
    done = retry_task(aws, task_id)
    result = done.to_dict()
    err = render.console(stderr=True)
    if done.already is None:
        err.print(f"queued {done.key} again: its new task is {done.task_id}", markup=False)
    else:
        state = done.already.status.value
        again = f" (retry that one: i2v retry {done.task_id})" if state in RETRYABLE else ""
        err.print(f"already retried: task {done.task_id} is {state}{again}", markup=False)
    if wait:
        task = wait_for_task(aws, done.task_id, timeout=timeout)
        result["status"] = task.status.value
    if json_output:
        render.emit_json(result)
    else:
        typer.echo(done.task_id)
    if wait and result["status"] != "SUCCEEDED":
        raise typer.Exit(Exit.FAILED)


class DeadLetterQueue(StrEnum):
    """i2v_cli.queues.DEAD_LETTER_QUEUES as choices."""

    UPLOADS = "uploads"
    FINALIZE = "finalize"
    POLL = "poll"


@app.command()
def redrive(
    ctx: typer.Context,
    queues: Annotated[
        list[DeadLetterQueue] | None,
        typer.Option("--queue", help="Which dead-letter queue (repeat for more; default: all three)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what waits in each.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Move dead-lettered messages back to the queue they came from, with a count."""
    from i2v_cli import render
    from i2v_cli.queues import redrive as move

    names = [q.value for q in queues] if queues else [q.value for q in DeadLetterQueue]
    done = move(_aws(ctx), names, dry_run=dry_run)
    if json_output:
        render.emit_json({"dry_run": dry_run, "queues": [row.to_dict() for row in done]})
        return
    grid = render.table(
        "dead-letter queues" + (" (dry run)" if dry_run else ""), ["queue", "waiting", "moved"]
    )
    for row in done:
        render.add_row(grid, row.queue, str(row.waiting), str(row.moved))
    render.console().print(grid)


@app.command()
def submit(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Images, or folders of images.")],
    prompt: Annotated[str | None, typer.Option(help="What should happen in the video.")] = None,
    resolution: Annotated[str | None, typer.Option(help="720P or 1080P.")] = None,
    duration: Annotated[int | None, typer.Option(help="Seconds of video.")] = None,
    model: Annotated[str | None, typer.Option(help="HappyHorse version: 1.0 or 1.1.")] = None,
    provider: Annotated[str | None, typer.Option(help="The route that must take it.")] = None,
    seed: Annotated[int | None, typer.Option(help="The generation's seed.")] = None,
    key_prefix: Annotated[str, typer.Option(help="Under incoming/, before each file's name.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the tasks to their end.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 900,
    json_output: JsonOption = False,
) -> None:
    """Upload images under incoming/, their options as metadata.

    With --wait, follow their tasks and exit non-zero unless every one SUCCEEDED."""
    from i2v_cli import render
    from i2v_cli import uploads as ops

    planned = ops.plan(paths, key_prefix)
    meta = ops.metadata(
        prompt=prompt, resolution=resolution, duration=duration, model=model, provider=provider, seed=seed
    )
    aws = _aws(ctx)
    pending = _submit_with_progress(aws, planned, meta, wait=wait, timeout=timeout)
    if json_output:
        render.emit_json({"uploads": [item.to_dict(aws.stack.bucket) for item in planned]})
    else:
        failed = any(item.task is not None and item.task.error is not None for item in planned)
        grid = render.table(None, ["file", "key", "task", "status"] + (["error"] if failed else []))
        for item in planned:
            status = item.task.status.value if item.task else ("waiting" if wait else "uploaded")
            task_id = item.task.task_id if item.task else "-"
            error = item.task.error if item.task else None
            reason = [f"{error.code}: {error.message}" if error else ""] if failed else []
            render.add_row(grid, str(item.path), item.key, task_id, render.styled_status(status), *reason)
        render.console().print(grid)
    if pending:
        raise WaitTimedOut(f"{len(pending)} of {len(planned)} tasks had not ended after {timeout:g} s")
    if wait and any(item.task is None or item.task.status.value != "SUCCEEDED" for item in planned):
        raise typer.Exit(Exit.FAILED)


def _submit_with_progress(
    aws: Aws, planned: list[Any], meta: dict[str, str], *, wait: bool, timeout: float
) -> list[Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from i2v_cli import render
    from i2v_cli import uploads as ops

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, console=render.console(stderr=True), transient=False) as progress:
        sending = progress.add_task(f"uploading {len(planned)} files", total=sum(i.size for i in planned))
        for item in planned:
            ops.upload(aws, item, meta, lambda sent: progress.advance(sending, sent))
        if not wait:
            return []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ended"),
        TimeElapsedColumn(),
        console=render.console(stderr=True),
    ) as progress:
        ended = progress.add_task("waiting for the tasks", total=len(planned))

        def changed(item: Any) -> None:
            if item.task.status.is_terminal:
                progress.advance(ended)
            progress.console.print(f"{item.key}: {item.task.status.value}", markup=False)

        return ops.wait(aws, planned, timeout=timeout, changed=changed)


@app.command()
def tail(
    ctx: typer.Context,
    events: Annotated[
        list[str] | None,
        typer.Option("--event", help="Only these event types (video.succeeded, ...): an SNS filter policy."),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after this many.")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="Stop after this long.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Follow the notifications as they arrive (Ctrl-C stops; the temporary queue is deleted)."""
    import json

    from i2v_cli import render
    from i2v_cli import tail as ops

    aws = _aws(ctx)
    out = render.console()

    def received(note: dict[str, Any]) -> None:
        if json_output:
            typer.echo(json.dumps(note, ensure_ascii=False))
            return
        message = note["message"] if isinstance(note["message"], dict) else {}
        error = (message.get("error") or {}).get("code", "")
        source = (message.get("source") or {}).get("key", "")
        out.print(
            f"{note['timestamp']}  {note['attributes'].get('event_type', '-'):<16} "
            f"{message.get('task_id', '-')}  {source}  {error}".rstrip(),
            markup=False,
        )

    with ops.subscribed(aws, events or ()) as queue_url:
        render.console(stderr=True).print(f"following {aws.stack.topic_arn} (Ctrl-C to stop)")
        # Ctrl-C is how a tail ends: the queue is deleted on the way out.
        with contextlib.suppress(KeyboardInterrupt):
            ops.follow(aws, queue_url, count=count, seconds=seconds, received=received)


class RowFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


@app.command()
def cost(
    ctx: typer.Context,
    since: SinceOption = "30d",
    charged_without_video: Annotated[
        bool,
        typer.Option(
            "--charged-without-video",
            help="Instead: the provider attempts that may have been billed and brought no video.",
        ),
    ] = False,
    output_format: Annotated[
        RowFormat, typer.Option("--format", help="With --charged-without-video: csv or json.")
    ] = RowFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", help="With --charged-without-video: write here, not to stdout.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Estimated spend per route and resolution, from the tasks' estimates.

    With --charged-without-video, the refund evidence: one row per attempt a provider may
    have billed that produced no video, with what its support asks for."""
    from i2v_cli import render
    from i2v_cli.tasks import scan_since

    start = _since(since)
    if charged_without_video:
        _refund_evidence(ctx, start, RowFormat.JSON if json_output else output_format, output)
        return
    from i2v_cli.cost import cost_by_route

    rows = cost_by_route(scan_since(_aws(ctx), start))
    total = round(sum(row.estimated_usd for row in rows), 4)
    if json_output:
        render.emit_json(
            {"since": since, "rows": [row.to_dict() for row in rows], "total_estimated_usd": total}
        )
        return
    columns = ["route", "resolution", "tasks", "submitted", "succeeded", "unpriced", "USD"]
    grid = render.table(f"estimated spend since {since}", columns)
    for row in rows:
        counts = (row.tasks, row.submitted, row.succeeded, row.unpriced)
        render.add_row(grid, row.route, row.resolution, *map(str, counts), f"{row.estimated_usd:,.4f}")
    render.add_row(grid, "total", "", "", "", "", "", f"{total:,.4f}", style="bold")
    render.console().print(grid)


def _refund_evidence(ctx: typer.Context, start: float, output_format: RowFormat, output: Path | None) -> None:
    import sys

    from i2v_cli import render
    from i2v_cli.cost import charged_without_video, write_rows
    from i2v_cli.errors import NotFound
    from i2v_cli.tasks import scan_since

    if output is not None and not output.parent.is_dir():
        raise NotFound(f"no folder {output.parent} to write {output.name} in")
    rows = charged_without_video(scan_since(_aws(ctx), start, with_attempts=True))
    if output is None:
        write_rows(rows, output_format.value, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        write_rows(rows, output_format.value, out)
    render.console(stderr=True).print(
        f"{len(rows)} attempts charged without a video written to {output}", markup=False
    )


@app.command()
def audit(
    ctx: typer.Context,
    since: SinceOption = "1d",
    repair: Annotated[
        bool, typer.Option("--repair/--no-repair", help="Re-send lost uploads, re-publish notifications.")
    ] = True,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", help="Seconds an upload is left to its own S3 event before it counts as lost."
        ),
    ] = 3600,
    start_after: Annotated[
        str | None, typer.Option("--start-after", help="Go on from this key (a report's resume_after).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Uploads that never became a task, tasks without their video, outcomes never announced.

    The scheduled audit's check on demand (i2v/usecases/audit.py), over the uploads
    modified since a time; its watermark is left alone."""
    from i2v_cli import render

    start = _since(since)
    aws = _aws(ctx)
    report = _upload_audit(aws, grace)(since=start, start_after=start_after, repair=repair)
    found = report.to_dict()
    if json_output:
        render.emit_json(found)
        return
    render.console().print(render.audit_report(found, since))
    if not found["complete"]:
        render.console(stderr=True).print(
            f"more to audit: i2v audit --since {since} --start-after '{found['resume_after']}'", markup=False
        )


class _Stderr:
    """Whatever sys.stderr is at each write (a test runner swaps it per command)."""

    def write(self, text: str) -> int:
        import sys

        return sys.stderr.write(text)

    def flush(self) -> None:
        import sys

        sys.stderr.flush()


def _upload_audit(aws: Aws, grace: float) -> Any:
    """The audit use case over this stack's clients, the pipeline's logs on stderr."""
    import logging

    from i2v.observability import logger
    from i2v.usecases.audit import AuditConfig, upload_audit

    # stdout is the command's output; the pipeline's JSON log lines (warnings only) go aside.
    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.stream = _Stderr()  # not setStream: it flushes the old stream, maybe closed
    logger.setLevel("WARNING")
    stack = aws.stack
    return upload_audit(
        config=AuditConfig(bucket=stack.bucket, grace_seconds=grace),
        s3=aws.s3,
        dynamodb=aws.dynamodb,
        sqs=aws.sqs,
        sns=aws.sns,
        table=stack.table,
        uploads_queue_url=stack.uploads_queue_url,
        dead_letter_queue_url=stack.outputs.get("DeadLetterQueueUrl"),
        topic_arn=stack.topic_arn,
    )


def main() -> None:
    app()
