"""Opt-in checks against a deployed stack: `E2E_STACK_NAME=happyhorse-i2v pytest tests/e2e`.

Skipped unless E2E_STACK_NAME is set (and AWS credentials with it). They cost nothing at
the provider: a rejected upload and a forged callback never reach it.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

STACK = os.environ.get("E2E_STACK_NAME")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not STACK, reason="set E2E_STACK_NAME (and AWS credentials) to run against a deployed stack"
    ),
]


@pytest.fixture(scope="module")
def session() -> Any:
    import boto3

    return boto3.Session()


@pytest.fixture(scope="module")
def outputs(session: Any) -> dict[str, str]:
    stack = session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def wait_for_status(table: Any, key: str, bucket: str, want: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = table.query(
            IndexName="by-source",
            KeyConditionExpression="source_uri = :uri",
            ExpressionAttributeValues={":uri": f"s3://{bucket}/{key}"},
        )["Items"]
        if items and items[0]["status"] == want:
            return dict(items[0])
        time.sleep(3)
    raise AssertionError(f"{key} did not reach {want} within {timeout} s")


def test_a_non_image_is_rejected_with_its_reason(session: Any, outputs: dict[str, str]) -> None:
    key = f"incoming/e2e/{uuid.uuid4()}.jpg"
    session.client("s3").put_object(Bucket=outputs["BucketName"], Key=key, Body=b"not an image")
    table = session.resource("dynamodb").Table(outputs["TableName"])
    item = wait_for_status(table, key, outputs["BucketName"], "REJECTED")
    assert item["error"]["code"] == "UNSUPPORTED_FORMAT"


def test_a_forged_callback_is_refused(outputs: dict[str, str]) -> None:
    import httpx

    url = f"{outputs['WebhookBaseUrl']}/callbacks/{uuid.uuid4()}?token=forged"
    response = httpx.post(url, json={"task_id": "x", "status": "COMPLETED", "generated": []}, timeout=30)
    assert response.status_code == 401
