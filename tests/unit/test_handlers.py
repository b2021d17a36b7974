"""The three Lambda handlers with real-shaped events (events/), against moto in-process.

The provider is reached over loopback only: a closed port stands for an outage.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token
from tests.support.aws import received_as_sqs_event
from tests.support.fakes import LambdaContext, image_bytes
from tests.unit.conftest import Aws

EVENTS = Path(__file__).resolve().parents[2] / "events"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    secrets = __import__("boto3").client("secretsmanager")
    secrets.create_secret(Name="happyhorse/magnific/api-key", SecretString="api-key-1")
    secrets.create_secret(Name="happyhorse/magnific/webhook-secret", SecretString=WEBHOOK_SECRET)
    queue_url = aws.sqs.create_queue(QueueName="uploads")["QueueUrl"]
    finalize_url = aws.sqs.create_queue(QueueName="finalize")["QueueUrl"]
    values = {
        "TABLE_NAME": aws.table,
        "BUCKET_NAME": aws.bucket,
        "TOPIC_ARN": aws.topic_arn,
        "UPLOADS_QUEUE_URL": queue_url,
        "FINALIZE_QUEUE_URL": finalize_url,
        "ROUTES": "magnific",
        "WEBHOOK_BASE_URL": "https://hooks.example.com",
        "MAGNIFIC_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "MAGNIFIC_TIMEOUT_SECONDS": "2",
        "VIDEO_ALLOWED_HOSTS": ".example.com",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def object_created_batch(bucket: str, key: str, message_id: str, receipt_handle: str) -> dict[str, Any]:
    batch = event("sqs-s3-object-created.json")
    record = copy.deepcopy(batch["Records"][0])
    body = json.loads(record["body"])
    body["Records"][0]["s3"]["bucket"]["name"] = bucket
    body["Records"][0]["s3"]["object"]["key"] = key
    record |= {"body": json.dumps(body), "messageId": message_id, "receiptHandle": receipt_handle}
    return {"Records": [record]}


def test_submit_skips_the_s3_test_event_and_sidecars(env: dict[str, str]) -> None:
    import submit

    for name in ("sqs-s3-test-event.json", "sqs-s3-sidecar.json"):
        assert submit.handler(event(name), LambdaContext()) == {"batchItemFailures": []}


def test_submit_rejects_a_bad_image_without_failing_the_batch(env: dict[str, str], aws: Aws) -> None:
    import submit

    aws.s3.put_object(
        Bucket=aws.bucket, Key="incoming/my holiday/café.jpg", Body=b"<html>not an image</html>"
    )
    batch = object_created_batch(aws.bucket, "incoming/my+holiday/caf%C3%A9.jpg", "m-1", "r-1")
    assert submit.handler(batch, LambdaContext()) == {"batchItemFailures": []}
    [item] = aws.dynamodb.scan(TableName=aws.table)["Items"]
    assert item["status"]["S"] == "REJECTED"
    assert item["source"]["M"]["key"]["S"] == "incoming/my holiday/café.jpg"


def test_submit_reports_a_provider_outage_as_a_batch_item_failure_and_delays_the_retry(
    env: dict[str, str], aws: Aws
) -> None:
    import submit

    # Given a valid upload whose message sits in the uploads queue, and an unreachable provider
    aws.s3.put_object(Bucket=aws.bucket, Key="incoming/cat.png", Body=image_bytes())
    aws.sqs.send_message(QueueUrl=env["UPLOADS_QUEUE_URL"], MessageBody="s3 notification")
    [message] = aws.sqs.receive_message(QueueUrl=env["UPLOADS_QUEUE_URL"], VisibilityTimeout=0)["Messages"]
    batch = object_created_batch(
        aws.bucket, "incoming/cat.png", message["MessageId"], message["ReceiptHandle"]
    )
    # When the batch is handled
    response = submit.handler(batch, LambdaContext())
    # Then the record is reported failed, kept RECEIVED, and its next delivery is pushed out
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    [item] = aws.dynamodb.scan(TableName=aws.table)["Items"]
    assert (
        item["status"]["S"] == "RECEIVED" and item["last_error"]["M"]["code"]["S"] == "PROVIDER_UNAVAILABLE"
    )
    assert aws.sqs.receive_message(QueueUrl=env["UPLOADS_QUEUE_URL"]).get("Messages", []) == []


@pytest.fixture
def waiting_task(aws: Aws) -> Task:
    store = TaskStore(aws.dynamodb, aws.table)
    now = time.time()
    task = Task(
        task_id="e0d8575b-dd40-521c-9dd8-6afde163ee90",
        status=TaskStatus.RECEIVED,
        received_at=now,
        updated_at=now,
        source=SourceObject(bucket=aws.bucket, key="incoming/cat.png"),
        provider=ProviderRef(name="magnific"),
        token_hash=hash_token("good-token"),
        owner="upload-message",
    )
    assert store.create(task, lease_until=now + 60).applied
    done = store.mark_submitted(task.task_id, provider_task_id="p-1", now=now)
    assert done is not None
    return done


def finalize_orders(aws: Aws, env: dict[str, str]) -> dict[str, Any]:
    """What the finalize queue holds, as the SQS event Lambda would hand the callback function."""
    return received_as_sqs_event(aws.sqs, env["FINALIZE_QUEUE_URL"])


def callback_event(task_id: str, token: str, body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    request = event("apigw-callback-in-progress.json")
    stamp = datetime.now(UTC)
    request["pathParameters"] = {"route": "magnific", "task_id": task_id}
    request["rawPath"] = request["requestContext"]["http"]["path"] = f"/callbacks/magnific/{task_id}"
    request["queryStringParameters"] = {"token": token}
    request["rawQueryString"] = f"token={token}"
    request["body"] = body.decode()
    request["headers"] |= {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", stamp, body.decode()),
    }
    return request


def test_callback_moves_a_task_to_running(env: dict[str, str], waiting_task: Task, aws: Aws) -> None:
    import callback

    body = b'{"task_id": "p-1", "status": "IN_PROGRESS", "generated": []}'
    response = callback.handler(callback_event(waiting_task.task_id, "good-token", body), LambdaContext())
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"outcome": "running"}
    task = TaskStore(aws.dynamodb, aws.table).get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("task_id", "token", "secret"),
    [
        ("e0d8575b-dd40-521c-9dd8-6afde163ee90", "bad-token", WEBHOOK_SECRET),
        (
            "e0d8575b-dd40-521c-9dd8-6afde163ee90",
            "good-token",
            "whsec_" + base64.b64encode(b"x" * 32).decode(),
        ),
        ("00000000-0000-0000-0000-000000000000", "good-token", WEBHOOK_SECRET),
    ],
    ids=["wrong token", "forged signature", "unknown task"],
)
def test_forged_callbacks_get_401_and_change_nothing(
    env: dict[str, str], waiting_task: Task, aws: Aws, task_id: str, token: str, secret: str
) -> None:
    import callback

    body = b'{"task_id": "p-1", "status": "COMPLETED", "generated": ["https://cdn.example.com/v.mp4"]}'
    response = callback.handler(callback_event(task_id, token, body, secret), LambdaContext())
    assert response["statusCode"] == 401 and json.loads(response["body"]) == {"message": "Unauthorized"}
    assert TaskStore(aws.dynamodb, aws.table).get(waiting_task.task_id) == waiting_task


def test_a_rotated_webhook_secret_loses_no_webhook(env: dict[str, str], waiting_task: Task, aws: Aws) -> None:
    import callback

    # Given a warm callback process holding the webhook secret, and a rotation after that
    running = b'{"task_id": "p-1", "status": "IN_PROGRESS", "generated": []}'
    assert (
        callback.handler(callback_event(waiting_task.task_id, "good-token", running), LambdaContext())[
            "statusCode"
        ]
        == 200
    )
    new_secret = "whsec_" + base64.b64encode(b"n" * 32).decode()
    secrets = __import__("boto3").client("secretsmanager")
    secrets.put_secret_value(SecretId="happyhorse/magnific/webhook-secret", SecretString=new_secret)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()

    def answer(secret: str) -> int:
        request = callback_event(waiting_task.task_id, "good-token", running, secret)
        return int(callback.handler(request, LambdaContext())["statusCode"])

    # Then a webhook signed with the new value (its cached copy is older), one signed with
    # the value it replaced (sent before the rotation), and another 401 forgery
    assert answer(new_secret) == 200
    assert answer(WEBHOOK_SECRET) == 200
    assert answer(other) == 401
    task = TaskStore(aws.dynamodb, aws.table).get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.RUNNING


def test_forged_webhooks_read_the_secret_store_at_most_once_a_minute(
    env: dict[str, str], waiting_task: Task, aws: Aws
) -> None:
    import callback

    from i2v import aws as i2v_aws

    reads: list[str] = []
    i2v_aws.client("secretsmanager").meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **kwargs: reads.append("read")
    )
    body = b'{"task_id": "p-1", "status": "IN_PROGRESS", "generated": []}'
    forged = "whsec_" + base64.b64encode(b"x" * 32).decode()
    for _ in range(20):
        response = callback.handler(
            callback_event(waiting_task.task_id, "good-token", body, forged), LambdaContext()
        )
        assert response["statusCode"] == 401
    # The first read of the secret, then one fresh read of it and of the value it replaced
    assert len(reads) == 3


def test_the_sample_callback_events_are_routed(env: dict[str, str]) -> None:
    import callback

    # The samples' tokens match no task: routed to the callback, and refused
    for name in (
        "apigw-callback-created.json",
        "apigw-callback-in-progress.json",
        "apigw-callback-completed.json",
        "apigw-callback-failed.json",
    ):
        assert callback.handler(event(name), LambdaContext())["statusCode"] == 401


def test_a_completion_is_acknowledged_at_once_and_finished_from_the_finalize_queue(
    env: dict[str, str], waiting_task: Task, aws: Aws
) -> None:
    import callback

    # Given the provider's FAILED webhook (a success would need a video server: see below)
    body = b'{"task_id": "p-1", "status": "FAILED", "generated": []}'
    response = callback.handler(callback_event(waiting_task.task_id, "good-token", body), LambdaContext())
    # Then it is answered at once, the task is FINALIZING, and one order is queued
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"outcome": "finalizing"}
    store = TaskStore(aws.dynamodb, aws.table)
    task = store.get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.FINALIZING
    orders = finalize_orders(aws, env)
    assert len(orders["Records"]) == 1
    # When the order is delivered to the same function
    assert callback.handler(orders, LambdaContext()) == {"batchItemFailures": []}
    # Then the task ended FAILED, out of the open index, and was announced
    task = store.get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.FAILED
    assert list(store.list_open(older_than=float("inf"))) == []
    [notice] = aws.sqs.receive_message(QueueUrl=aws.tap_url)["Messages"]
    assert json.loads(json.loads(notice["Body"])["Message"])["status"] == "FAILED"


def test_a_finalize_order_that_cannot_be_done_now_is_a_batch_item_failure_with_a_delay(
    env: dict[str, str], waiting_task: Task, aws: Aws
) -> None:
    import callback

    # Given a completion naming no video, and a provider that cannot be asked (closed port)
    body = b'{"task_id": "p-1", "status": "COMPLETED", "generated": []}'
    response = callback.handler(callback_event(waiting_task.task_id, "good-token", body), LambdaContext())
    assert response["statusCode"] == 200
    orders = finalize_orders(aws, env)
    [record] = orders["Records"]
    # When the order is handled
    response = callback.handler(orders, LambdaContext())
    # Then it comes back later: reported failed, its visibility pushed out, the task still open
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert aws.sqs.receive_message(QueueUrl=env["FINALIZE_QUEUE_URL"]).get("Messages", []) == []
    task = TaskStore(aws.dynamodb, aws.table).get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.FINALIZING


def test_reconcile_runs_on_the_scheduled_event(
    env: dict[str, str], waiting_task: Task, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    import callback
    import reconcile

    # Given a task past its deadline
    monkeypatch.setenv("TASK_DEADLINE_SECONDS", "60")
    monkeypatch.setenv("RECONCILE_AFTER_SECONDS", "0")
    store = TaskStore(aws.dynamodb, aws.table)
    aws.dynamodb.update_item(
        TableName=aws.table,
        Key={"task_id": {"S": waiting_task.task_id}},
        UpdateExpression="SET received_at = :old",
        ExpressionAttributeValues={":old": {"N": "1"}},
    )
    # When the schedule fires
    report = reconcile.handler(event("scheduled-reconcile.json"), LambdaContext())
    # Then the task is queued to time out, and its order ends it with a notification
    assert report == {"timed_out": 1}
    assert callback.handler(finalize_orders(aws, env), LambdaContext()) == {"batchItemFailures": []}
    task = store.get(waiting_task.task_id)
    assert task is not None and task.status is TaskStatus.TIMED_OUT
    [notice] = aws.sqs.receive_message(QueueUrl=aws.tap_url)["Messages"]
    assert json.loads(json.loads(notice["Body"])["Message"])["status"] == "TIMED_OUT"
