"""What the local worker records of each AWS call: the IAM action and resource AWS would
authorize it against (local/lambda_worker.py), from real boto3 calls to in-process moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.lambda_worker import SESSION_AWS_CALL_LOG, iam_requests, record_aws_calls

REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/tasks"


def requests(service: str, operation: str, params: dict[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    options: dict[str, Any] = {"status": 200, "response": {}} | kwargs
    return iam_requests(
        service,
        operation,
        params,
        options["response"],
        status=options["status"],
        region=REGION,
        account=ACCOUNT,
    )


@pytest.mark.parametrize(
    ("operation", "params", "status", "expected"),
    [
        ("GetObject", {"Key": "incoming/a.png"}, 200, [("s3:GetObject", "arn:aws:s3:::b/incoming/a.png")]),
        ("HeadObject", {"Key": "k"}, 200, [("s3:GetObject", "arn:aws:s3:::b/k")]),
        ("HeadObject", {"Key": "k", "VersionId": "v1"}, 200, [("s3:GetObjectVersion", "arn:aws:s3:::b/k")]),
        # A missing key answers 404 only to a caller allowed to list the bucket
        (
            "HeadObject",
            {"Key": "k"},
            404,
            [("s3:GetObject", "arn:aws:s3:::b/k"), ("s3:ListBucket", "arn:aws:s3:::b")],
        ),
        ("HeadObject", {"Key": "k"}, 403, [("s3:GetObject", "arn:aws:s3:::b/k")]),
        ("CreateMultipartUpload", {"Key": "v/x.mp4"}, 200, [("s3:PutObject", "arn:aws:s3:::b/v/x.mp4")]),
        ("UploadPart", {"Key": "v/x.mp4"}, 200, [("s3:PutObject", "arn:aws:s3:::b/v/x.mp4")]),
        ("CompleteMultipartUpload", {"Key": "v/x.mp4"}, 200, [("s3:PutObject", "arn:aws:s3:::b/v/x.mp4")]),
        (
            "AbortMultipartUpload",
            {"Key": "v/x.mp4"},
            204,
            [("s3:AbortMultipartUpload", "arn:aws:s3:::b/v/x.mp4")],
        ),
        ("ListObjectsV2", {"Prefix": "incoming/"}, 200, [("s3:ListBucket", "arn:aws:s3:::b")]),
        ("ListObjectVersions", {}, 200, [("s3:ListBucketVersions", "arn:aws:s3:::b")]),
        (
            "DeleteObject",
            {"Key": "k", "VersionId": "v"},
            204,
            [("s3:DeleteObjectVersion", "arn:aws:s3:::b/k")],
        ),
        (
            "CopyObject",
            {"Key": "to", "CopySource": {"Bucket": "src", "Key": "from"}},
            200,
            [("s3:PutObject", "arn:aws:s3:::b/to"), ("s3:GetObject", "arn:aws:s3:::src/from")],
        ),
    ],
)
def test_s3_operations_map_to_the_actions_s3_authorizes(
    operation: str, params: dict[str, Any], status: int, expected: list[tuple[str, str]]
) -> None:
    assert requests("s3", operation, {"Bucket": "b", **params}, status=status) == expected


@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        ("UpdateItem", {"TableName": "tasks"}, [("dynamodb:UpdateItem", TABLE_ARN)]),
        (
            "Query",
            {"TableName": "tasks", "IndexName": "open-tasks"},
            [("dynamodb:Query", f"{TABLE_ARN}/index/open-tasks")],
        ),
        ("Query", {"TableName": "tasks"}, [("dynamodb:Query", TABLE_ARN)]),
        ("BatchWriteItem", {"RequestItems": {"tasks": []}}, [("dynamodb:BatchWriteItem", TABLE_ARN)]),
        (
            "TransactWriteItems",
            {"TransactItems": [{"Put": {"TableName": "tasks"}}, {"ConditionCheck": {"TableName": "tasks"}}]},
            [("dynamodb:PutItem", TABLE_ARN), ("dynamodb:ConditionCheckItem", TABLE_ARN)],
        ),
        (
            "TransactGetItems",
            {"TransactItems": [{"Get": {"TableName": "tasks"}}]},
            [("dynamodb:GetItem", TABLE_ARN)],
        ),
    ],
)
def test_dynamodb_operations_name_the_table_or_index_they_touch(
    operation: str, params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert requests("dynamodb", operation, params) == expected


def test_messaging_secrets_and_other_services() -> None:
    queue = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/finalize"
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:finalize"
    assert requests("sqs", "SendMessage", {"QueueUrl": queue}) == [("sqs:SendMessage", queue_arn)]
    assert requests(
        "sqs", "DeleteMessageBatch", {"QueueUrl": "http://127.0.0.1:5000/" + ACCOUNT + "/finalize"}
    ) == [("sqs:DeleteMessage", queue_arn)]
    assert requests("sqs", "GetQueueUrl", {"QueueName": "finalize"}) == [("sqs:GetQueueUrl", queue_arn)]
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:notifications"
    assert requests("sns", "PublishBatch", {"TopicArn": topic}) == [("sns:Publish", topic)]
    # A secret read by name is authorized on its full ARN, which the answer gives
    full = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:happyhorse/fal/api-key-AbCdEf"
    assert requests(
        "secretsmanager", "GetSecretValue", {"SecretId": "happyhorse/fal/api-key"}, response={"ARN": full}
    ) == [("secretsmanager:GetSecretValue", full)]
    assert requests("ssm", "GetParameters", {"Names": ["/hh/fal/api-key", "hh"]}) == [
        ("ssm:GetParameters", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/hh/fal/api-key"),
        ("ssm:GetParameters", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/hh"),
    ]
    assert requests("cloudwatch", "PutMetricData", {"Namespace": "n"}) == [("cloudwatch:PutMetricData", "*")]


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A call log of this process's boto3 default session, as a function's worker keeps one."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "i2v-local-SubmitFunction-TEST")
    monkeypatch.setenv(SESSION_AWS_CALL_LOG, str(tmp_path / "session.jsonl"))
    previous = boto3.DEFAULT_SESSION
    path = tmp_path / "calls.jsonl"
    with mock_aws():
        record_aws_calls(path)
        yield path
    boto3.DEFAULT_SESSION = previous


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_real_call_is_recorded_once_with_its_action_resource_and_status(recorded: Path) -> None:
    # Given a function's calls: an upload read, a missing one, a presigned URL, a multipart
    # video upload, an index query and a secret read by name
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="media")
    s3.put_object(Bucket="media", Key="incoming/a.png", Body=b"png")
    s3.head_object(Bucket="media", Key="incoming/a.png")
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket="media", Key="incoming/gone.png")
    s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "incoming/a.png"})
    upload = s3.create_multipart_upload(Bucket="media", Key="videos/a/t.mp4")["UploadId"]
    s3.abort_multipart_upload(Bucket="media", Key="videos/a/t.mp4", UploadId=upload)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    from tests.support.aws import create_tasks_table

    table = create_tasks_table(dynamodb)
    dynamodb.query(
        TableName=table,
        IndexName="open-tasks",
        KeyConditionExpression="open_shard = :s",
        ExpressionAttributeValues={":s": {"N": "0"}},
    )
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="happyhorse/fal/api-key", SecretString="k")["ARN"]
    secrets.get_secret_value(SecretId="happyhorse/fal/api-key")

    # When the log is read back
    calls = lines(recorded)

    # Then each call is one line, in order, with the action and resource AWS checks
    summary = [(c["operation"], c["status"], [(r["action"], r["resource"]) for r in c["iam"]]) for c in calls]
    assert summary[1:] == [
        ("PutObject", 200, [("s3:PutObject", "arn:aws:s3:::media/incoming/a.png")]),
        ("HeadObject", 200, [("s3:GetObject", "arn:aws:s3:::media/incoming/a.png")]),
        (
            "HeadObject",
            404,
            [
                ("s3:GetObject", "arn:aws:s3:::media/incoming/gone.png"),
                ("s3:ListBucket", "arn:aws:s3:::media"),
            ],
        ),
        ("GetObject", None, [("s3:GetObject", "arn:aws:s3:::media/incoming/a.png")]),
        ("CreateMultipartUpload", 200, [("s3:PutObject", "arn:aws:s3:::media/videos/a/t.mp4")]),
        ("AbortMultipartUpload", 204, [("s3:AbortMultipartUpload", "arn:aws:s3:::media/videos/a/t.mp4")]),
        (
            "CreateTable",
            200,
            [("dynamodb:CreateTable", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}")],
        ),
        (
            "Query",
            200,
            [("dynamodb:Query", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/index/open-tasks")],
        ),
        ("CreateSecret", 200, [("secretsmanager:CreateSecret", arn)]),
        ("GetSecretValue", 200, [("secretsmanager:GetSecretValue", arn)]),
    ]
    assert calls[0]["operation"] == "CreateBucket"
    assert [c.get("presigned", False) for c in calls].count(True) == 1
    assert {c["function"] for c in calls} == {"i2v-local-SubmitFunction-TEST"}
    # And the session's log got the same lines
    assert lines(recorded.parent / "session.jsonl") == calls


def test_a_call_that_got_no_answer_is_recorded_without_a_status(recorded: Path) -> None:
    from botocore.config import Config
    from botocore.exceptions import EndpointConnectionError

    # Given a client pointed at a port where nothing listens
    sqs = boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(EndpointConnectionError):
        sqs.send_message(QueueUrl=f"http://127.0.0.1:9/{ACCOUNT}/q", MessageBody="x")
    [call] = lines(recorded)
    assert (call["operation"], call["status"]) == ("SendMessage", None)
    assert call["iam"] == [{"action": "sqs:SendMessage", "resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q"}]
