"""Unit-test fixtures: moto in-process AWS with the template's table, and the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from i2v.tasks.store import TaskStore
from tests.support.aws import create_tasks_table, create_topic_tap
from tests.support.fakes import Clock, FakeProvider, FakeVideoFetcher, Notifications, RecordingMetrics


@dataclass
class Aws:
    s3: Any
    sqs: Any
    sns: Any
    dynamodb: Any
    bucket: str
    table: str
    topic_arn: str
    tap_url: str


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        sns = boto3.client("sns")
        dynamodb = boto3.client("dynamodb")
        s3.create_bucket(Bucket="media")
        topic_arn, tap_url = create_topic_tap(sns, sqs)
        yield Aws(s3, sqs, sns, dynamodb, "media", create_tasks_table(dynamodb), topic_arn, tap_url)


@pytest.fixture
def store(aws: Aws) -> TaskStore:
    return TaskStore(aws.dynamodb, aws.table, retention_days=30)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def notifications() -> Notifications:
    return Notifications()


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def fetcher() -> FakeVideoFetcher:
    return FakeVideoFetcher()
