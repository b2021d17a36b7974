"""The i2v CLI in-process: stack discovery on moto's CloudFormation, errors and exit codes,
argument parsing, upload planning, redrive's attributes and the cost table.
The commands against the whole local stack: tests/integration/test_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from typer.testing import CliRunner

from i2v.domain import ErrorInfo, Options, ProviderRef, SourceObject, Task, TaskStatus
from i2v.options import resolve_options
from i2v.redelivery import FAILURE_ATTRIBUTES
from i2v.tasks.store import TaskStore
from i2v_cli.aws import Aws
from i2v_cli.cost import cost_by_route
from i2v_cli.errors import Exit
from i2v_cli.main import app
from i2v_cli.queues import redrive
from i2v_cli.stack import StackInfo, from_local_file, write_local_file
from i2v_cli.uploads import metadata, plan
from i2v_cli.values import parse_since
from tests.support.aws import create_tasks_table

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "happyhorse-test"
NOW = 1_800_000_000.0


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A 'deployed' stack on moto: its resources, and a CloudFormation stack whose Outputs name them."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        outputs = {
            "BucketName": "media",
            "TableName": create_tasks_table(boto3.client("dynamodb", region_name=REGION)),
            "TopicArn": boto3.client("sns", region_name=REGION).create_topic(Name="notes")["TopicArn"],
        }
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="media")
        for output, name in (
            ("UploadsQueueUrl", "uploads"),
            ("DeadLetterQueueUrl", "uploads-dlq"),
            ("FinalizeQueueUrl", "finalize"),
            ("FinalizeDeadLetterQueueUrl", "finalize-dlq"),
            ("PollQueueUrl", "poll"),
            ("PollDeadLetterQueueUrl", "poll-dlq"),
        ):
            outputs[output] = sqs.create_queue(QueueName=name)["QueueUrl"]
        template = {
            "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "marker"}}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName=STACK, TemplateBody=json.dumps(template)
        )
        yield outputs


def task(task_id: str, status: TaskStatus, **fields: Any) -> Task:
    return Task(
        task_id=task_id,
        status=status,
        source=SourceObject(bucket="media", key=f"incoming/{task_id}.png"),
        provider=ProviderRef(
            name=fields.pop("route", "magnific"), task_id=fields.pop("provider_task_id", None)
        ),
        received_at=fields.pop("received_at", NOW),
        updated_at=NOW,
        **fields,
    )


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_a_deployed_stack_is_found_by_its_cloudformation_outputs(deployed: dict[str, str]) -> None:
    # Given a task in the stack's table, written as the pipeline writes it
    store = TaskStore(boto3.client("dynamodb", region_name=REGION), deployed["TableName"])
    store.create(
        task("7c7b3a52-0000-4000-8000-000000000001", TaskStatus.RECEIVED, received_at=9e9), lease_until=0
    )

    # When the CLI is pointed at the stack by name
    listed = invoke("--stack", STACK, "list", "--status", "RECEIVED", "--since", "1970-01-01", "--json")
    shown = invoke("--stack", STACK, "status", "incoming/7c7b3a52-0000-4000-8000-000000000001.png", "--json")

    # Then it reads the table its outputs name
    assert listed.exit_code == 0, listed.output
    assert [t["task_id"] for t in json.loads(listed.stdout)["tasks"]] == [
        "7c7b3a52-0000-4000-8000-000000000001"
    ]
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["tasks"][0]["status"] == "RECEIVED"
    assert "token_hash" not in json.loads(shown.stdout)["tasks"][0]


def test_a_missing_stack_task_or_file_is_a_clear_error_with_its_exit_code(
    deployed: dict[str, str], tmp_path: Path
) -> None:
    no_stack = invoke("--stack", "nope", "list")
    no_task = invoke("--stack", STACK, "status", "00000000-0000-4000-8000-000000000000")
    no_key = invoke("--stack", STACK, "status", "incoming/never.png")
    no_file = invoke("--stack", STACK, "submit", str(tmp_path / "missing.png"))
    no_local = invoke("--stack-file", str(tmp_path / "local-stack.json"), "list")
    nothing = invoke("list")

    assert no_stack.exit_code == Exit.NOT_FOUND and "no CloudFormation stack named 'nope'" in no_stack.stderr
    assert (
        no_task.exit_code == Exit.NOT_FOUND
        and "no task 00000000-0000-4000-8000-000000000000" in no_task.stderr
    )
    assert no_key.exit_code == Exit.NOT_FOUND and "no task for s3://media/incoming/never.png" in no_key.stderr
    assert no_file.exit_code == Exit.NOT_FOUND and "no such file or folder" in no_file.stderr
    assert no_local.exit_code == Exit.NOT_FOUND and "start one with `make stack`" in no_local.stderr
    assert nothing.exit_code == Exit.FAILED and "which stack?" in nothing.stderr
    assert "Traceback" not in no_task.output


def test_a_stack_without_the_pipelines_outputs_is_refused(deployed: dict[str, str]) -> None:
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="other",
        TemplateBody=json.dumps(
            {"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}}}}
        ),
    )
    result = invoke("--stack", "other", "list")
    assert result.exit_code == Exit.NOT_FOUND
    assert "has no outputs ['BucketName', 'TableName', 'TopicArn', 'UploadsQueueUrl']" in result.stderr


@set_initial_no_auth_action_count(3)
def test_a_refused_permission_is_its_own_exit_code(deployed: dict[str, str], tmp_path: Path) -> None:
    # Given credentials that may describe the stack and nothing else (moto enforces IAM from here)
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="viewer")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "cloudformation:Describe*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="viewer", PolicyName="describe", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="viewer")["AccessKey"]
    env = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_SESSION_TOKEN": None,
    }
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG")

    status = invoke("--stack", STACK, "status", "00000000-0000-4000-8000-000000000000", env=env)
    upload = invoke("--stack", STACK, "submit", str(image), env=env)

    assert status.exit_code == Exit.DENIED and "permission denied for GetItem" in status.stderr
    assert upload.exit_code == Exit.DENIED and "permission denied for PutObject" in upload.stderr


def test_retry_refuses_a_task_that_has_not_failed(deployed: dict[str, str]) -> None:
    store = TaskStore(boto3.client("dynamodb", region_name=REGION), deployed["TableName"])
    store.create(task("7c7b3a52-0000-4000-8000-000000000002", TaskStatus.RECEIVED), lease_until=0)
    result = invoke("--stack", STACK, "retry", "7c7b3a52-0000-4000-8000-000000000002")
    assert result.exit_code == Exit.REFUSED
    assert "is RECEIVED: only FAILED, TIMED_OUT, REJECTED tasks can be retried" in result.stderr
    assert "Messages" not in boto3.client("sqs").receive_message(QueueUrl=deployed["UploadsQueueUrl"])


def test_redrive_moves_each_message_back_without_its_failure_reason(deployed: dict[str, str]) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    reason = {name: {"DataType": "String", "StringValue": "x"} for name in FAILURE_ATTRIBUTES}
    own = {"origin": {"DataType": "String", "StringValue": "kept"}}
    for i in range(12):
        sqs.send_message(
            QueueUrl=deployed["DeadLetterQueueUrl"], MessageBody=f"order {i}", MessageAttributes=reason | own
        )
    stack = StackInfo(name=STACK, region=REGION, outputs=deployed)

    counted = redrive(Aws(boto3.session.Session(region_name=REGION), stack), dry_run=True)
    moved = redrive(Aws(boto3.session.Session(region_name=REGION), stack), ["uploads"])

    assert [(r.queue, r.waiting, r.moved) for r in counted] == [
        ("uploads", 12, 0),
        ("finalize", 0, 0),
        ("poll", 0, 0),
    ]
    assert [(r.queue, r.waiting, r.moved) for r in moved] == [("uploads", 12, 12)]
    back = []
    while batch := sqs.receive_message(
        QueueUrl=deployed["UploadsQueueUrl"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        back += batch
        for message in batch:
            sqs.delete_message(QueueUrl=deployed["UploadsQueueUrl"], ReceiptHandle=message["ReceiptHandle"])
    assert sorted(m["Body"] for m in back) == sorted(f"order {i}" for i in range(12))
    assert all(set(m["MessageAttributes"]) == {"origin"} for m in back)
    assert "Messages" not in sqs.receive_message(QueueUrl=deployed["DeadLetterQueueUrl"])


def test_unknown_dead_letter_queue_is_a_usage_error() -> None:
    result = invoke("--stack", STACK, "redrive", "--queue", "nope")
    assert result.exit_code == Exit.USAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86_400),
        ("1.5h", NOW - 5400),
        ("2026-12-01", 1_796_083_200.0),
        ("2026-12-01T09:30:00Z", 1_796_117_400.0),
        ("2026-12-01T10:30:00+01:00", 1_796_117_400.0),
        ("1796117400", 1_796_117_400.0),
    ],
)
def test_since_takes_durations_dates_and_epochs(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == expected


def test_a_bad_since_is_a_usage_error_that_says_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="'yesterday' is not a time: use 30m"):
        parse_since("yesterday", now=NOW)
    result = invoke("--stack", STACK, "list", "--since", "yesterday")
    assert result.exit_code == Exit.USAGE and "is not a time" in result.output


def test_metadata_is_what_the_pipeline_reads_back() -> None:
    meta = metadata(
        prompt="Été: 50% plus de vagues, «mouettes»",
        resolution="720P",
        duration=8,
        model="1.1",
        provider="fal",
        seed=7,
    )
    assert all(value.isascii() for value in meta.values())
    options = resolve_options(Options(), meta, lambda key: b"")
    assert options == Options(
        prompt="Été: 50% plus de vagues, «mouettes»",
        resolution="720P",
        duration=8,
        model="1.1",
        provider="fal",
        seed=7,
    )
    assert metadata(prompt=None, resolution=None, duration=None, model=None, provider=None, seed=None) == {}


def test_a_folder_contributes_its_images_by_their_path_in_it(tmp_path: Path) -> None:
    (tmp_path / "shoot" / "day 2").mkdir(parents=True)
    for name in ("a.jpg", "day 2/b.PNG", "notes.txt", "day 2/c.webp"):
        (tmp_path / "shoot" / name).write_bytes(b"x")
    single = tmp_path / "cover.gif"
    single.write_bytes(b"y")

    planned = plan([tmp_path / "shoot", single], "batch/")

    assert [u.key for u in planned] == [
        "incoming/batch/a.jpg",
        "incoming/batch/day 2/b.PNG",
        "incoming/batch/day 2/c.webp",
        "incoming/batch/cover.gif",
    ]


def test_a_plan_refuses_empty_folders_and_two_files_for_one_key(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    from i2v_cli.errors import CliError, NotFound

    with pytest.raises(NotFound, match="no images"):
        plan([tmp_path / "empty"])
    with pytest.raises(CliError, match=r"same key: \['incoming/a.png'\]"):
        plan([tmp_path / "one", tmp_path / "a.png"])


def test_cost_sums_the_estimates_of_tasks_a_provider_took_per_route_and_resolution() -> None:
    tasks = [
        task("a", TaskStatus.SUCCEEDED, provider_task_id="p1", estimated_cost_usd=0.7),
        task("b", TaskStatus.FAILED, provider_task_id="p2", estimated_cost_usd=0.7),
        task("c", TaskStatus.REJECTED),
        task("g", TaskStatus.SUCCEEDED, route="apiyi", provider_task_id="p4"),
        task(
            "d",
            TaskStatus.FAILED,
            estimated_cost_usd=0.7,
            error=ErrorInfo(code="PROVIDER_OUTCOME_UNKNOWN", message="-"),
        ),
        task(
            "e",
            TaskStatus.SUCCEEDED,
            route="fal",
            provider_task_id="p3",
            estimated_cost_usd=0.14,
            options=Options(resolution="720P"),
        ),
        task(
            "f",
            TaskStatus.FAILED,
            route="fal",
            estimated_cost_usd=0.14,
            options=Options(resolution="720P"),
            error=ErrorInfo(code="PROVIDER_REJECTED", message="-"),
        ),
    ]
    rows = [row.to_dict() for row in cost_by_route(tasks)]
    assert rows == [
        {
            "route": "apiyi",
            "resolution": "1080P",
            "tasks": 1,
            "submitted": 1,
            "succeeded": 1,
            "estimated_usd": 0.0,
            "unpriced": 1,
        },
        {
            "route": "fal",
            "resolution": "720P",
            "tasks": 2,
            "submitted": 1,
            "succeeded": 1,
            "estimated_usd": 0.14,
            "unpriced": 0,
        },
        {
            "route": "magnific",
            "resolution": "1080P",
            "tasks": 4,
            "submitted": 3,
            "succeeded": 1,
            "estimated_usd": 2.1,
            "unpriced": 0,
        },
    ]


def test_the_local_stack_file_round_trips_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    info = StackInfo(
        name="i2v-local",
        region=REGION,
        outputs={"BucketName": "b", "TableName": "t", "TopicArn": "arn:t", "UploadsQueueUrl": "u"},
        endpoint_url="http://127.0.0.1:1",
        credentials={"aws_access_key_id": "testing"},
    )
    path = tmp_path / "out" / "local-stack.json"
    write_local_file(path, info, pid=1)
    assert from_local_file(path) == info
    path.write_text('{"version": 99}')
    result = invoke("--stack-file", str(path), "list")
    assert result.exit_code == Exit.FAILED and "is not a local stack file of version 1" in result.stderr


def test_help_imports_neither_boto3_nor_the_pipeline() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from i2v_cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('boto3', 'botocore', 'i2v', 'pydantic') if m in sys.modules))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert shown.stdout.strip() == "[]"


def test_the_cli_libraries_stay_out_of_the_lambda_layer() -> None:
    layer = (ROOT / "layers" / "pipeline" / "requirements.txt").read_text().lower()
    assert "typer==" not in layer and "rich==" not in layer


def test_keys_and_messages_are_shown_as_they_are_not_as_markup() -> None:
    from rich.console import Console

    from i2v_cli.render import task_detail, tasks_table

    shown = task(
        "7c7b3a52-0000-4000-8000-000000000003",
        TaskStatus.REJECTED,
        error=ErrorInfo(code="INVALID_OPTIONS", message="[bold]duration[/bold] over 15"),
    ).model_copy(update={"source": SourceObject(bucket="media", key="incoming/[red]draft[/red] cat.png")})
    console = Console(width=200, record=True)
    console.print(task_detail(shown))
    console.print(tasks_table("tasks of [x]", [shown]))
    text = console.export_text()
    assert "incoming/[red]draft[/red] cat.png" in text
    assert "[bold]duration[/bold] over 15" in text and "tasks of [x]" in text


def test_an_endpoint_that_does_not_answer_says_so(tmp_path: Path) -> None:
    info = StackInfo(
        name="i2v-local",
        region=REGION,
        outputs={"BucketName": "b", "TableName": "t", "TopicArn": "arn:t", "UploadsQueueUrl": "u"},
        endpoint_url="http://127.0.0.1:9",
        credentials={"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
    )
    write_local_file(tmp_path / "local-stack.json", info)
    result = invoke("--stack-file", str(tmp_path / "local-stack.json"), "status", "incoming/cat.png")
    assert result.exit_code == Exit.FAILED
    assert "Could not connect to the endpoint URL" in result.stderr and "make stack" in result.stderr


def test_make_stack_will_not_start_over_the_file_of_a_running_stack(tmp_path: Path) -> None:
    import os

    from local.stack_main import main as make_stack

    running = tmp_path / "local-stack.json"
    running.write_text(json.dumps({"version": 1, "pid": os.getpid()}))
    assert make_stack(["--output", str(running)]) == 1
    assert json.loads(running.read_text())["pid"] == os.getpid()


def test_the_choices_the_cli_restates_match_the_pipelines() -> None:
    from i2v_cli.main import DeadLetterQueue, Status
    from i2v_cli.queues import DEAD_LETTER_QUEUES

    assert [s.value for s in Status] == [s.value for s in TaskStatus]
    assert tuple(q.value for q in DeadLetterQueue) == DEAD_LETTER_QUEUES


def test_a_deployed_and_a_local_stack_at_once_is_a_usage_error() -> None:
    result = invoke("--stack", STACK, "--local", "list")
    assert result.exit_code == Exit.USAGE and "not both" in result.output


def test_a_refund_export_with_no_rows_is_still_a_csv_with_its_header() -> None:
    import csv
    import io

    from i2v.attempts import REFUND_COLUMNS
    from i2v_cli.cost import write_rows

    out = io.StringIO()
    write_rows([], "csv", out)
    assert next(csv.reader(io.StringIO(out.getvalue()))) == list(REFUND_COLUMNS)
    assert out.getvalue().count("\n") == 1


def test_no_region_is_a_usage_error_that_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    result = CliRunner().invoke(app, ["--stack", "anything", "list"])
    assert result.exit_code == Exit.USAGE
    assert "no AWS region: give --region" in result.stderr
