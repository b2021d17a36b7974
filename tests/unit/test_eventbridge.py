"""The optional EventBridge bus: with it on, every notification is also an event on it (a rule
to a queue receives it); with it off, no EventBridge call is made; a refusal on either
channel loses nothing and does not send the SNS message twice. moto in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from i2v import wiring
from i2v.domain import TaskStatus
from i2v.notify import EVENT_SOURCE, SnsNotifier, UndeliveredEvent, build_message
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from tests.support.aws import published
from tests.support.fakes import Clock, RecordingMetrics
from tests.unit.conftest import Aws
from tests.unit.test_contracts import VARIANTS, drain, take_to
from tests.unit.test_notify import finished

BUS = "stack-notifications"


@pytest.fixture
def calls() -> Iterator[list[tuple[str, str]]]:
    """(service, operation) of every AWS call that clients made from here on make."""
    made: list[tuple[str, str]] = []

    def record(model: Any, **_: Any) -> None:
        made.append((model.service_model.service_name, model.name))

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register("before-call", record)
    yield made
    boto3.DEFAULT_SESSION = None


def bus_with_a_rule_to_a_queue(aws: Aws, events: Any) -> str:
    """The bus, with one rule taking this stack's events to a queue; the queue's URL."""
    events.create_event_bus(Name=BUS)
    queue_url: str = aws.sqs.create_queue(QueueName="bus-tap")["QueueUrl"]
    attributes = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    arn = attributes["QueueArn"]
    events.put_rule(Name="all", EventBusName=BUS, EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
    events.put_targets(Rule="all", EventBusName=BUS, Targets=[{"Id": "queue", "Arn": arn}])
    return queue_url


def stack_environment(monkeypatch: pytest.MonkeyPatch, aws: Aws, event_bus: str | None) -> None:
    monkeypatch.setenv("TABLE_NAME", aws.table)
    monkeypatch.setenv("BUCKET_NAME", aws.bucket)
    monkeypatch.setenv("TOPIC_ARN", aws.topic_arn)
    if event_bus is None:
        monkeypatch.delenv("EVENT_BUS_NAME", raising=False)
    else:
        monkeypatch.setenv("EVENT_BUS_NAME", event_bus)


def test_with_the_bus_on_a_rule_receives_the_same_message_as_the_topic(
    aws: Aws, calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stack whose environment names its bus, and a rule on the bus to a queue
    queue_url = bus_with_a_rule_to_a_queue(aws, boto3.client("events"))
    stack_environment(monkeypatch, aws, BUS)
    calls.clear()

    # When a task's outcome is announced the way the functions do it
    task = finished(TaskStatus.FAILED)
    wiring.notify(task)

    # Then the event went to the bus, then the message to the topic, and both carry one JSON
    assert calls == [("events", "PutEvents"), ("sns", "Publish")]
    [event] = [json.loads(body) for body in drain(aws, queue_url)]
    [envelope] = published(aws.sqs, aws.tap_url)
    assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, "video.failed")
    assert event["detail"] == json.loads(envelope["Message"]) == build_message(task)


@pytest.mark.parametrize("setting", [None, ""])
def test_with_the_bus_off_no_eventbridge_call_is_made(
    aws: Aws, calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    # Given a stack without a bus (the variable unset, or empty as the template sets it)
    stack_environment(monkeypatch, aws, setting)

    # When a task's outcome is announced
    wiring.notify(finished(TaskStatus.SUCCEEDED))

    # Then the topic got it, and nothing called EventBridge
    assert calls == [("sns", "Publish")]
    assert len(published(aws.sqs, aws.tap_url)) == 1


@pytest.fixture
def store_and_clock(aws: Aws) -> tuple[TaskStore, Clock]:
    return TaskStore(aws.dynamodb, aws.table, retention_days=30), Clock()


def test_a_bus_that_refuses_delays_both_channels_and_the_retry_sends_each_once(
    aws: Aws, store_and_clock: tuple[TaskStore, Clock]
) -> None:
    # Given a stack whose bus cannot be reached (it does not exist yet)
    store, clock = store_and_clock
    events = boto3.client("events")
    notifier = SnsNotifier(aws.sns, aws.topic_arn, events_client=events, event_bus=BUS)
    ending = Endings(store=store, notify=notifier.publish, metrics=RecordingMetrics(), clock=clock)

    # When a task ends
    ended = take_to(TaskStatus.FAILED, VARIANTS[0], store, ending, clock)

    # Then it is ended, nothing went out on the topic, and the reconciler's index has it
    assert published(aws.sqs, aws.tap_url) == []
    pending = store.get(ended.task_id)
    assert pending is not None and pending.status is TaskStatus.FAILED and pending.notify_pending

    # When the bus is back and the reconciler announces the task again
    queue_url = bus_with_a_rule_to_a_queue(aws, events)
    assert ending.announce(pending)

    # Then each channel got the message once
    assert len(drain(aws, queue_url)) == 1
    assert len(published(aws.sqs, aws.tap_url)) == 1


def test_a_topic_that_refuses_after_the_bus_took_the_event_repeats_only_the_event(
    aws: Aws, store_and_clock: tuple[TaskStore, Clock]
) -> None:
    # Given a bus that works and a topic that does not (yet)
    store, clock = store_and_clock
    events = boto3.client("events")
    queue_url = bus_with_a_rule_to_a_queue(aws, events)
    missing_topic = aws.topic_arn.replace("notifications", "gone")
    broken = SnsNotifier(aws.sns, missing_topic, events_client=events, event_bus=BUS)
    ending = Endings(store=store, notify=broken.publish, metrics=RecordingMetrics(), clock=clock)

    # When a task ends, and later the reconciler announces it again through the right topic
    ended = take_to(TaskStatus.TIMED_OUT, VARIANTS[1], store, ending, clock)
    pending = store.get(ended.task_id)
    assert pending is not None and pending.notify_pending
    fixed = SnsNotifier(aws.sns, aws.topic_arn, events_client=events, event_bus=BUS)
    retry = Endings(store=store, notify=fixed.publish, metrics=RecordingMetrics(), clock=clock)
    assert retry.announce(pending)

    # Then the topic's subscribers got it once; the bus's twice, with one event id to dedupe on
    [envelope] = published(aws.sqs, aws.tap_url)
    received = [json.loads(body)["detail"] for body in drain(aws, queue_url)]
    assert len(received) == 2
    assert {m["event_id"] for m in received} == {json.loads(envelope["Message"])["event_id"]}


def test_an_event_the_bus_accepts_the_call_for_but_refuses_is_a_failure(aws: Aws) -> None:
    # Given EventBridge answering the call with a failed entry (throttled), stubbed
    events = boto3.client("events")
    stubber = Stubber(events)
    stubber.add_response(
        "put_events",
        {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}],
        },
    )

    # When a notification is published
    notifier = SnsNotifier(aws.sns, aws.topic_arn, events_client=events, event_bus=BUS)
    with stubber, pytest.raises(UndeliveredEvent, match="ThrottlingException: Rate exceeded"):
        notifier.publish(finished(TaskStatus.REJECTED))

    # Then it failed before the topic: its retry will send each channel once
    stubber.assert_no_pending_responses()
    assert published(aws.sqs, aws.tap_url) == []


def test_a_bus_without_a_client_is_a_clear_error(aws: Aws) -> None:
    with pytest.raises(ValueError, match="an event bus needs an EventBridge client"):
        SnsNotifier(aws.sns, aws.topic_arn, event_bus=BUS)
