"""The callback function's world for the adversarial tests, on in-process moto (with every
signed route configured) or on the local stack's moto server.

Magnific signs like Standard Webhooks (a shared secret); fal signs with Ed25519 keys it
publishes as a JWKS, served here by a real HTTP server on loopback. Deliveries are signed
with the libraries the senders use: `standardwebhooks` and `cryptography`. State is read
back from DynamoDB (every item), S3 (every object), the topic (through an SQS
subscription) and the finalize queue, so a test can say "nothing changed".
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from moto import mock_aws
from standardwebhooks import Webhook

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.tasks.store import TaskStore
from i2v.tokens import hash_token
from tests.support.aws import create_tasks_table, create_topic_tap, received_as_sqs_event
from tests.support.fakes import LambdaContext

EVENTS = Path(__file__).resolve().parents[2] / "events"
MAGNIFIC_SECRET = "whsec_" + base64.b64encode(b"adversarial-magnific-secret-32b!").decode()
SIGNED_ROUTES = ("magnific", "fal")
FAL_USER_ID = "user-4242"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JwksServer:
    """fal's JWKS endpoint on loopback: the public half of `key`, counted per request."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        document = {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
            ]
        }
        body = json.dumps(document).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


@dataclass
class Delivery:
    """One webhook as it reaches the HTTP API: its URL parts, headers and raw body."""

    route: str
    task_id: str
    token: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] | None = None

    @property
    def path(self) -> str:
        return f"/callbacks/{quote(self.route, safe='')}/{quote(self.task_id, safe='')}"

    @property
    def query_parameters(self) -> dict[str, str]:
        return {"token": self.token} if self.query is None else self.query

    def event(self) -> dict[str, Any]:
        """An API Gateway HTTP API (payload 2.0) event, shaped like the sample in events/."""
        request: dict[str, Any] = json.loads((EVENTS / "apigw-callback-in-progress.json").read_text())
        path, query = self.path, self.query_parameters
        request["rawPath"] = request["requestContext"]["http"]["path"] = path
        request["pathParameters"] = {"route": self.route, "task_id": self.task_id}
        request["rawQueryString"] = urlencode(query)
        if query:
            request["queryStringParameters"] = dict(query)
        else:
            request.pop("queryStringParameters", None)
        kept = {k: v for k, v in request["headers"].items() if not k.startswith("webhook-")}
        request["headers"] = kept | {"content-length": str(len(self.body))} | self.headers
        try:
            request["body"], request["isBase64Encoded"] = self.body.decode("utf-8"), False
        except UnicodeDecodeError:
            request["body"], request["isBase64Encoded"] = base64.b64encode(self.body).decode(), True
        return request

    def target(self) -> str:
        """The path and query, as a client would request them over HTTP."""
        query = self.query_parameters
        return f"{self.path}?{urlencode(query)}" if query else self.path


FalSign = Callable[[str, bytes, int], str]
"""(request id, body, unix time) -> the hex Ed25519 signature fal sends (for its user id)."""


def fal_signer(key: Ed25519PrivateKey, user_id: str = FAL_USER_ID) -> FalSign:
    def sign(request_id: str, body: bytes, timestamp: int) -> str:
        message = "\n".join([request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()])
        return key.sign(message.encode()).hex()

    return sign


@dataclass
class Signer:
    """Signs deliveries as each route's sender does."""

    magnific_secret: str
    fal_sign: FalSign
    fal_user_id: str = FAL_USER_ID

    def magnific_headers(
        self, body: bytes, *, sent_at: datetime | None = None, secret: str | None = None
    ) -> dict[str, str]:
        stamp = sent_at or datetime.now(UTC)
        webhook_id = f"msg_{uuid.uuid4().hex}"
        signature = Webhook(secret or self.magnific_secret).sign(
            webhook_id, stamp, body.decode("utf-8", "replace")
        )
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
        }

    def fal_headers(
        self, body: bytes, request_id: str, *, sent_at: float | None = None, sign: FalSign | None = None
    ) -> dict[str, str]:
        timestamp = int(sent_at if sent_at is not None else time.time())
        return {
            "content-type": "application/json",
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": self.fal_user_id,
            "x-fal-webhook-timestamp": str(timestamp),
            "x-fal-webhook-signature": (sign or self.fal_sign)(request_id, body, timestamp),
        }

    def headers(self, route: str, body: bytes, provider_task_id: str) -> dict[str, str]:
        if route == "magnific":
            return self.magnific_headers(body)
        return self.fal_headers(body, provider_task_id)


def flip_middle(signature: str) -> str:
    """The signature with a character in its middle changed (base64 or hex alike; a lax
    base64 decoder ignores what follows the padding and the last character's spare bits)."""
    middle = len(signature) // 2
    return signature[:middle] + ("a" if signature[middle] != "a" else "b") + signature[middle + 1 :]


def completed_body(route: str, provider_task_id: str, **extra: Any) -> bytes:
    """A finished task's webhook body, as the route sends it."""
    if route == "magnific":
        body: dict[str, Any] = {
            "task_id": provider_task_id,
            "status": "COMPLETED",
            "generated": ["https://cdn.magnific.com/v.mp4"],
        }
    else:
        body = {
            "request_id": provider_task_id,
            "gateway_request_id": provider_task_id,
            "status": "OK",
            "payload": {"video": {"url": "https://v3.fal.media/files/v.mp4"}, "seed": 7},
        }
    return json.dumps(body | extra).encode()


def failed_body(route: str, provider_task_id: str) -> bytes:
    if route == "magnific":
        return json.dumps({"task_id": provider_task_id, "status": "FAILED", "generated": []}).encode()
    return json.dumps(
        {"request_id": provider_task_id, "status": "ERROR", "error": "content policy", "payload": None}
    ).encode()


def running_body(route: str, provider_task_id: str) -> bytes:
    """A progress update: only Magnific sends one (fal's webhook is its final answer)."""
    return json.dumps({"task_id": provider_task_id, "status": "IN_PROGRESS", "generated": []}).encode()


@dataclass(frozen=True)
class SeededTask:
    task: Task
    token: str

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def route(self) -> str:
        return self.task.provider.name

    @property
    def provider_task_id(self) -> str:
        assert self.task.provider.task_id is not None
        return self.task.provider.task_id


@dataclass
class Snapshot:
    items: list[dict[str, Any]]
    objects: list[tuple[str, str]]
    notifications: int
    finalize_orders: int


@dataclass
class CallbackRig:
    """The AWS resources the callback function touches (in-process moto or the local
    stack's moto server), how deliveries are signed, and helpers to seed and compare."""

    s3: Any
    sqs: Any
    dynamodb: Any
    bucket: str
    table: str
    tap_url: str
    finalize_url: str
    signer: Signer
    tasks: dict[str, list[SeededTask]] = field(default_factory=dict)

    @property
    def store(self) -> TaskStore:
        return TaskStore(self.dynamodb, self.table)

    def seed(self, route: str) -> SeededTask:
        """A SUBMITTED task on `route`, with its own token and provider task id."""
        now = time.time()
        token = base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=")
        task_id = str(uuid.uuid4())
        task = Task(
            task_id=task_id,
            status=TaskStatus.RECEIVED,
            received_at=now,
            updated_at=now,
            source=SourceObject(bucket=self.bucket, key=f"incoming/{task_id}.png"),
            provider=ProviderRef(name=route),
            token_hash=hash_token(token),
            owner=f"upload-{task_id}",
        )
        assert self.store.create(task, lease_until=now + 60).applied
        submitted = self.store.mark_submitted(task_id, provider_task_id=f"{route}-req-{task_id[:8]}", now=now)
        assert submitted is not None
        seeded = SeededTask(submitted, token)
        self.tasks.setdefault(route, []).append(seeded)
        return seeded

    def delivery(self, seeded: SeededTask, body: bytes, headers: Mapping[str, str] | None = None) -> Delivery:
        """A delivery to `seeded`'s own callback URL, signed unless `headers` are given."""
        signed = self.signer.headers(seeded.route, body, seeded.provider_task_id)
        return Delivery(
            seeded.route, seeded.task_id, seeded.token, dict(signed if headers is None else headers), body
        )

    def table_items(self) -> list[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=self.table, ConsistentRead=True)
        return [item for page in pages for item in page["Items"]]

    def snapshot(self) -> Snapshot:
        items = self.table_items()
        listed = self.s3.list_object_versions(Bucket=self.bucket)
        objects = [(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])]
        return Snapshot(
            items=sorted(items, key=lambda item: json.dumps(item, sort_keys=True)),
            objects=sorted(objects),
            notifications=self._depth(self.tap_url),
            finalize_orders=self._depth(self.finalize_url),
        )

    def _depth(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def drain_finalize_queue(self) -> None:
        """Drop the orders earlier tests left (PurgeQueue is allowed once a minute)."""
        while messages := self.sqs.receive_message(QueueUrl=self.finalize_url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.finalize_url, ReceiptHandle=message["ReceiptHandle"])

    def run_finalize_orders(self) -> dict[str, Any]:
        """Hand the waiting orders to the callback function (in this process) and delete the
        ones it did, as Lambda's event source mapping does; the function's answer."""
        event = self.finalize_event()
        answer = invoke(event)
        failed = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.finalize_url, ReceiptHandle=record["receiptHandle"])
        return answer

    def finalize_event(self) -> dict[str, Any]:
        """The finalize queue's messages as the SQS event Lambda hands the callback function."""
        return received_as_sqs_event(self.sqs, self.finalize_url)


@dataclass
class InProcessRig(CallbackRig):
    jwks: JwksServer | None = None

    def table_items(self) -> list[dict[str, Any]]:
        """Every item, read from moto's own table: a Scan spends ~50 ms serializing a few
        tasks, which the fuzz would pay twice per example."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        region = self.dynamodb.meta.region_name
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(self.table)
        return [item.to_json()["Attributes"] for item in table.all_items()]


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    """The deployed entry point, as Lambda calls it."""
    import callback

    answer: dict[str, Any] = callback.handler(event, LambdaContext())
    return answer


def environment(jwks_url: str, finalize_url: str, table: str, bucket: str, topic_arn: str) -> dict[str, str]:
    """The callback function's settings for the in-process rig."""
    return {
        "TABLE_NAME": table,
        "BUCKET_NAME": bucket,
        "TOPIC_ARN": topic_arn,
        "FINALIZE_QUEUE_URL": finalize_url,
        "ROUTES": ",".join(SIGNED_ROUTES),
        "WEBHOOK_BASE_URL": "https://hooks.example.com",
        # No provider is ever reached: a closed port stands for each API.
        "MAGNIFIC_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "FAL_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "FAL_JWKS_URL": jwks_url,
        "MAGNIFIC_TIMEOUT_SECONDS": "2",
        "FAL_TIMEOUT_SECONDS": "2",
    }


@contextlib.contextmanager
def running_rig() -> Iterator[InProcessRig]:
    """One moto world (a test module's): each test seeds its own tasks and compares states."""
    fal_key = Ed25519PrivateKey.generate()
    with mock_aws(), JwksServer(fal_key) as jwks, pytest.MonkeyPatch.context() as patch:
        s3, sqs, sns, dynamodb = (boto3.client(name) for name in ("s3", "sqs", "sns", "dynamodb"))
        secrets = boto3.client("secretsmanager")
        bucket = "media"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="incoming/existing.png", Body=b"an upload already there")
        topic_arn, tap_url = create_topic_tap(sns, sqs)
        finalize_url = sqs.create_queue(QueueName="finalize")["QueueUrl"]
        table = create_tasks_table(dynamodb)
        secrets.create_secret(Name="happyhorse/magnific/api-key", SecretString="magnific-key")
        secrets.create_secret(Name="happyhorse/magnific/webhook-secret", SecretString=MAGNIFIC_SECRET)
        secrets.create_secret(Name="happyhorse/fal/api-key", SecretString="fal-key")
        for name, value in environment(jwks.url, finalize_url, table, bucket, topic_arn).items():
            patch.setenv(name, value)
        signer = Signer(MAGNIFIC_SECRET, fal_signer(fal_key))
        yield InProcessRig(s3, sqs, dynamodb, bucket, table, tap_url, finalize_url, signer, jwks=jwks)
