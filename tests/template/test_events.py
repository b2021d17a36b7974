"""The sample events in events/ have the shapes AWS really sends (`sam local invoke -e`).

Powertools' parser models (pydantic mirrors of the AWS payloads) check the envelopes;
the assertions below check what the handlers depend on. The callback samples are signed
with SAMPLE_WEBHOOK_SECRET and are for the first upload of sqs-s3-object-created.json.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    EventBridgeModel,
    S3SqsEventNotificationModel,
    SqsModel,
)

from i2v.domain import derive_task_id
from tests.template.tools import ROOT

EVENTS = ROOT / "events"
SAMPLE_WEBHOOK_SECRET = "whsec_aGFwcHlob3JzZS1zYW1wbGUtZXZlbnRzLXNlY3JldCE="
CALLBACK_STATUSES = {
    "apigw-callback-created.json": "CREATED",
    "apigw-callback-in-progress.json": "IN_PROGRESS",
    "apigw-callback-completed.json": "COMPLETED",
    "apigw-callback-failed.json": "FAILED",
}
SQS_EVENTS = {
    "sqs-s3-object-created.json",
    "sqs-s3-test-event.json",
    "sqs-s3-sidecar.json",
    "sqs-finalize-order.json",
}
# The bucket name template.yaml builds: i2v-media-<the stack id's uuid>.
BUCKET_NAME = re.compile(r"^i2v-media-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def s3_records(name: str) -> list[Any]:
    """The S3 notification records inside an SQS batch, parsed as Powertools would."""
    batch = S3SqsEventNotificationModel.model_validate(load(name))
    return [s3_record for message in batch.Records for s3_record in message.body.Records]


def test_every_sample_event_is_known_json() -> None:
    # Given the files in events/
    names = {path.name for path in EVENTS.glob("*.json")}

    # Then they are exactly the documented samples, and each parses as a JSON object
    assert names == SQS_EVENTS | set(CALLBACK_STATUSES) | {"scheduled-reconcile.json"}
    assert all(isinstance(load(name), dict) for name in names)


@pytest.mark.parametrize("name", sorted(SQS_EVENTS))
def test_sqs_batches_have_the_lambda_sqs_shape(name: str) -> None:
    # Given an SQS batch as the event source mapping delivers it
    event = load(name)
    batch = SqsModel.model_validate(event)

    # Then every record has its id, receipt handle, receive count, source queue and a body
    # whose MD5 is the one SQS computed
    assert batch.Records
    for record, raw in zip(batch.Records, event["Records"], strict=True):
        assert record.eventSource == "aws:sqs"
        assert record.eventSourceARN.startswith("arn:aws:sqs:us-east-1:")
        assert int(record.attributes.ApproximateReceiveCount) >= 1
        assert record.receiptHandle
        assert hashlib.md5(raw["body"].encode()).hexdigest() == raw["md5OfBody"]
    assert len({record.messageId for record in batch.Records}) == len(batch.Records)


def test_object_created_batch_carries_url_encoded_keys_as_s3_sends_them() -> None:
    # Given the S3 notifications in the upload batch
    records = s3_records("sqs-s3-object-created.json")
    raw_keys = [record.s3.object.key for record in records]

    # Then the keys are encoded as S3 encodes them (space as '+', UTF-8 as %XX, '+' as %2B)
    assert raw_keys[0] == "incoming/my+holiday/caf%C3%A9+%C3%A0+la+plage.jpg"
    assert [unquote_plus(key) for key in raw_keys] == [
        "incoming/my holiday/café à la plage.jpg",
        "incoming/cat.jpg",
        "incoming/cat + dog.png",
    ]


def test_object_created_records_are_unversioned_puts_in_the_stack_bucket() -> None:
    # Given the S3 notifications in the upload batch
    event = load("sqs-s3-object-created.json")
    bodies = [json.loads(record["body"]) for record in event["Records"]]

    # Then each message holds one ObjectCreated:Put of schema 2.1 with size, eTag and
    # sequencer, and no versionId (the bucket is not versioned)
    for body in bodies:
        [record] = body["Records"]
        assert record["eventVersion"] == "2.1"
        assert record["eventSource"] == "aws:s3"
        assert record["eventName"] == "ObjectCreated:Put"
        s3_object = record["s3"]["object"]
        assert set(s3_object) == {"key", "size", "eTag", "sequencer"}
        assert s3_object["size"] > 0
        assert re.fullmatch(r"[0-9A-F]{16,}", s3_object["sequencer"])
        assert BUCKET_NAME.match(record["s3"]["bucket"]["name"])
        assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{record['s3']['bucket']['name']}"
    sequencers = {body["Records"][0]["s3"]["object"]["sequencer"] for body in bodies}
    assert len(sequencers) == len(bodies)


def test_s3_test_event_is_what_s3_sends_when_a_notification_is_configured() -> None:
    # Given the batch S3 sends once, when the notification is set up
    [record] = load("sqs-s3-test-event.json")["Records"]
    body = json.loads(record["body"])

    # Then it is a bare s3:TestEvent, with no Records to process
    assert body["Service"] == "Amazon S3"
    assert body["Event"] == "s3:TestEvent"
    assert BUCKET_NAME.match(body["Bucket"])
    assert "Records" not in body
    assert {"Time", "RequestId", "HostId"} <= set(body)


def test_sidecar_event_names_an_options_file_under_incoming() -> None:
    # Given the notification for an options sidecar
    [record] = s3_records("sqs-s3-sidecar.json")

    # Then its key decodes to the sidecar of cat.jpg
    assert unquote_plus(record.s3.object.key) == "incoming/cat.options.json"
    assert record.eventName == "ObjectCreated:Put"


@pytest.mark.parametrize(("name", "status"), sorted(CALLBACK_STATUSES.items()))
def test_callback_events_are_http_api_v2_webhooks(name: str, status: str) -> None:
    # Given an HTTP API (payload 2.0) event of one provider webhook
    event = load(name)
    request = APIGatewayProxyEventV2Model.model_validate(event)
    task_id = event["pathParameters"]["task_id"]

    # Then it hits the callback route with the route and the task id in the path and the
    # token in the query
    assert event["version"] == "2.0"
    assert event["routeKey"] == request.requestContext.routeKey == "POST /callbacks/{route}/{task_id}"
    assert event["pathParameters"]["route"] == "magnific"
    assert event["rawPath"] == request.requestContext.http.path == f"/callbacks/magnific/{task_id}"
    assert request.requestContext.http.method == "POST"
    assert request.requestContext.stage == "$default"
    assert event["rawQueryString"] == urlencode(event["queryStringParameters"])
    assert event["queryStringParameters"]["token"]
    assert event["isBase64Encoded"] is False
    # And the body is Magnific's webhook: the task object without the data wrapper
    body = json.loads(event["body"])
    assert set(body) == {"task_id", "status", "generated"}
    assert body["status"] == status
    assert body["task_id"] != task_id
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["content-length"] == str(len(event["body"].encode()))


@pytest.mark.parametrize("name", sorted(CALLBACK_STATUSES))
def test_callback_events_are_signed_the_standard_webhooks_way(name: str) -> None:
    # Given a callback event and the sample secret
    event = load(name)
    headers = event["headers"]
    key = base64.b64decode(SAMPLE_WEBHOOK_SECRET.removeprefix("whsec_"))

    # When the signature is recomputed over "id.timestamp.body"
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{event['body']}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    # Then the header carries it as a "v1,<base64>" entry
    assert f"v1,{expected}" in headers["webhook-signature"].split(" ")
    assert headers["webhook-timestamp"].isdigit()


def test_callback_events_are_for_the_first_sample_upload() -> None:
    # Given the first upload of the SQS sample and the callbacks' task id
    [first, *_] = s3_records("sqs-s3-object-created.json")
    task_ids = {load(name)["pathParameters"]["task_id"] for name in CALLBACK_STATUSES}

    # Then the callbacks follow that upload's task (same id derivation as the pipeline)
    expected = derive_task_id(
        first.s3.bucket.name, unquote_plus(first.s3.object.key), first.s3.object.sequencer
    )
    assert task_ids == {expected}


def test_completed_callback_points_at_an_https_video_on_an_allowed_host() -> None:
    # Given the completed webhook and the template's default VideoAllowedHosts
    body = json.loads(load("apigw-callback-completed.json")["body"])
    allowed = (".magnific.com", ".freepik.com")

    # Then it lists one https URL, on a host the download policy accepts by default
    [video_url] = body["generated"]
    parts = urlsplit(video_url)
    assert parts.scheme == "https"
    assert parts.hostname is not None and parts.hostname.endswith(allowed)
    for name in set(CALLBACK_STATUSES) - {"apigw-callback-completed.json"}:
        assert json.loads(load(name)["body"])["generated"] == []


def test_finalize_order_is_the_completed_callbacks_task_as_the_callback_queues_it() -> None:
    from i2v.domain import TaskStatus
    from i2v.usecases.progress import FinalizeOrder

    # Given the finalize queue's sample message and the completed webhook it follows
    [record] = load("sqs-finalize-order.json")["Records"]
    order = FinalizeOrder.model_validate_json(record["body"])
    callback = load("apigw-callback-completed.json")
    webhook = json.loads(callback["body"])

    # Then it is that task, FINALIZING towards SUCCEEDED under its own order, with the video URL
    assert order.task.task_id == callback["pathParameters"]["task_id"]
    assert order.task.status is TaskStatus.FINALIZING and order.task.outcome is TaskStatus.SUCCEEDED
    assert order.task.owner is not None and order.task.owner.startswith("finalize-")
    assert order.task.provider.task_id == webhook["task_id"]
    assert order.video_url == webhook["generated"][0]
    assert record["eventSourceARN"].rsplit(":", 1)[1].split("-")[-2] == "FinalizeQueue"


def test_scheduled_event_is_an_eventbridge_scheduled_event() -> None:
    # Given the reconciler's sample event
    event = load("scheduled-reconcile.json")
    scheduled = EventBridgeModel.model_validate(event)

    # Then it is what an EventBridge schedule rule sends
    assert scheduled.detail_type == "Scheduled Event"
    assert scheduled.source == "aws.events"
    assert scheduled.detail == {}
    [rule] = scheduled.resources
    assert rule.startswith(f"arn:aws:events:{scheduled.region}:{scheduled.account}:rule/")
