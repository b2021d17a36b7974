"""Resources for in-process moto tests, shaped by template.yaml itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@cache
def template_resource(logical_id: str) -> dict[str, Any]:
    from local.template import load_template

    resource: dict[str, Any] = load_template(TEMPLATE)["Resources"][logical_id]
    return resource


def create_tasks_table(dynamodb: Any, name: str = "tasks") -> str:
    """The task table with the template's keys and indexes."""
    props = template_resource("TasksTable")["Properties"]
    dynamodb.create_table(
        TableName=name,
        BillingMode=props["BillingMode"],
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )
    return name


def create_topic_tap(sns: Any, sqs: Any, name: str = "notifications") -> tuple[str, str]:
    """A topic with a queue subscribed to it, so tests read what was published."""
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-tap")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn, queue_url


def published(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every SNS envelope waiting in a tap queue (drained)."""
    import json

    envelopes = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return envelopes
        for message in batch:
            envelopes.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def received_as_sqs_event(sqs: Any, queue_url: str) -> dict[str, Any]:
    """Up to 10 of the queue's messages, received, as the SQS event Lambda would hand the
    function (the shape of events/sqs-finalize-order.json, with each message's own id,
    receipt handle, body and receive count)."""
    import copy
    import json

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
        "Messages", []
    )
    events = Path(__file__).resolve().parents[2] / "events"
    template = json.loads((events / "sqs-finalize-order.json").read_text())["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(template)
        record |= {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
        }
        record["attributes"]["ApproximateReceiveCount"] = message["Attributes"]["ApproximateReceiveCount"]
        records.append(record)
    return {"Records": records}


@contextmanager
def serial_moto_server() -> Iterator[str]:
    """moto's server on loopback answering one request at a time, as DynamoDB applies the
    writes to one item one at a time (moto alone, in-process or threaded, interleaves them:
    an update races another between its condition and its write). Its endpoint URL."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
