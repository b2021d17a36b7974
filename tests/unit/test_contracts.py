"""The published contracts, held to the code: the notification's JSON Schema (generated from
the model that builds the messages) validates a real message of every event type and refuses
broken ones; the filter policies and event patterns in docs/notifications.md deliver exactly
what they say, on moto's SNS and EventBridge."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from jsonschema import Draft202012Validator

from i2v.domain import (
    ErrorInfo,
    Options,
    ProviderRef,
    Resolution,
    SourceObject,
    Task,
    TaskStatus,
    VideoObject,
)
from i2v.notify import EVENT_SOURCE, EVENT_TYPES, SnsNotifier, build_message
from i2v.tasks.lifecycle import may_move
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from local.contracts import NOTIFICATION_SCHEMA, notification_schema, render
from tests.support.aws import published
from tests.support.fakes import Clock, RecordingMetrics
from tests.unit.conftest import Aws
from tests.unit.test_notify import finished

DOC = NOTIFICATION_SCHEMA.parents[1] / "notifications.md"
Message = dict[str, Any]


def validator() -> Draft202012Validator:
    """The committed schema, with formats (uuid) checked."""
    schema = json.loads(NOTIFICATION_SCHEMA.read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# -- real messages: tasks taken through the store and ended (or announced) the one way -------

# The way a task usually goes; each announced status is reached from the furthest step that
# the lifecycle lets enter it, so a status added to EVENT_TYPES is covered without a change here.
USUAL_WAY = (TaskStatus.RECEIVED, TaskStatus.SUBMITTED, TaskStatus.RUNNING, TaskStatus.FINALIZING)
ERRORS = {
    TaskStatus.REJECTED: ("IMAGE_TOO_SMALL", "UNSUPPORTED_FORMAT"),
    TaskStatus.FAILED: ("PROVIDER_FAILED", "PROVIDER_HTTP_4xx"),
    TaskStatus.TIMED_OUT: ("TIMED_OUT", "TIMED_OUT"),
}


@dataclass(frozen=True)
class Variant:
    route: str
    folder: str
    resolution: Resolution
    cost: float | None


# Three uploads of each event type: two routes with a price, one without (cost null).
VARIANTS = (
    Variant("magnific", "holiday/", "1080P", 1.56),
    Variant("fal", "", "720P", 0.5),
    Variant("apiyi", "", "1080P", None),
)


def steps_to(status: TaskStatus) -> tuple[TaskStatus, ...]:
    """The open states after RECEIVED a task goes through before it enters `status`."""
    for last in range(len(USUAL_WAY), 0, -1):
        if may_move(USUAL_WAY[last - 1], status):
            return USUAL_WAY[1:last]
    raise AssertionError(f"the lifecycle has no way from RECEIVED to {status}")


def take_to(status: TaskStatus, variant: Variant, store: TaskStore, endings: Endings, clock: Clock) -> Task:
    """A task uploaded, moved through the store to `status` and published there by Endings."""
    task_id = f"{variant.route}-{status.value.lower()}"
    received = clock()
    store.create(
        Task(
            task_id=task_id,
            status=TaskStatus.RECEIVED,
            source=SourceObject(
                bucket="media",
                key=f"incoming/{variant.folder}{task_id}.png",
                size=48_213,
                content_type="image/png",
                image_format="png",
                width=1280,
                height=720,
            ),
            options=Options(
                prompt="the waves roll in", resolution=variant.resolution, provider=variant.route
            ),
            provider=ProviderRef(name=variant.route),
            owner="upload-1",
            received_at=received,
            updated_at=received,
            estimated_cost_usd=variant.cost,
        ),
        lease_until=received + 60,
    )
    for step in steps_to(status):
        clock.advance(1.25)
        if step is TaskStatus.SUBMITTED:
            assert store.mark_submitted(task_id, provider_task_id=f"p-{task_id}", now=clock())
        else:
            assert store.move(task_id, step, now=clock()).applied
    clock.advance(3.5)
    if not status.is_terminal:  # an event that ends nothing: written, then published
        moved = store.move(task_id, status, now=clock()).task
        assert moved is not None
        endings.notify(moved)
        return moved
    error = None
    if status in ERRORS:
        code = ERRORS[status][VARIANTS.index(variant) % 2]
        error = ErrorInfo(code=code, message=f"{code.lower()} for this test")
    video = None
    if status is TaskStatus.SUCCEEDED:
        body = f"mp4 of {task_id}".encode()
        video = VideoObject(
            bucket="media",
            key=f"videos/{variant.folder}{task_id}.mp4",
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        ).model_dump()
    ended = endings.end(
        task_id, status, owner="upload-1", error=error, set_={"video": video} if video else None
    )
    assert ended is not None and ended.status is status
    return ended


def publish_every_event(aws: Aws, notifier: SnsNotifier) -> list[Message]:
    """Every event type of every variant, through the real path; the bodies the topic carried."""
    store = TaskStore(aws.dynamodb, aws.table, retention_days=30)
    clock = Clock()
    endings = Endings(store=store, notify=notifier.publish, metrics=RecordingMetrics(), clock=clock)
    for status in EVENT_TYPES:
        for variant in VARIANTS:
            take_to(status, variant, store, endings, clock)
    messages = [json.loads(envelope["Message"]) for envelope in published(aws.sqs, aws.tap_url)]
    # A publish that failed is caught by Endings (and left to the reconciler): none may have.
    assert len(messages) == len(EVENT_TYPES) * len(VARIANTS), "a notification was not published"
    return messages


# -- the schema --------------------------------------------------------------------------------


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    # Given the schema generated from NotificationMessage now
    generated = notification_schema()

    # Then it is a valid draft 2020-12 schema, with its id and descriptions, and the committed
    # file is exactly it (regenerate with `python -m local.contracts`)
    Draft202012Validator.check_schema(generated)
    assert generated["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert generated["$id"] and generated["description"]
    assert generated["properties"]["event_type"]["enum"] == list(EVENT_TYPES.values())
    assert NOTIFICATION_SCHEMA.read_text() == render(generated), "run `python -m local.contracts`"


def test_a_real_message_of_every_event_type_is_valid(aws: Aws) -> None:
    # Given every event type of each variant, ended through the store on moto, published to
    # the topic and received from the queue subscribed to it
    messages = publish_every_event(aws, SnsNotifier(aws.sns, aws.topic_arn))

    # Then each body is valid against the committed schema, and every type is there
    schema = validator()
    for message in messages:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema.iter_errors(message)]
        assert not errors, (message["task_id"], errors)
    assert sorted(m["event_type"] for m in messages) == sorted(
        event_type for event_type in EVENT_TYPES.values() for _ in VARIANTS
    )
    assert {m["estimated_cost_usd"] for m in messages} == {v.cost for v in VARIANTS}


def test_the_documented_examples_are_valid() -> None:
    examples = [json.loads(b) for b in re.findall(r"```json\n(\{.*?\})\n```", DOC.read_text(), flags=re.S)]
    messages = [example for example in examples if "event_id" in example]
    schema = validator()
    assert messages
    for message in messages:
        assert not list(schema.iter_errors(message)), message["event_type"]


def _set(path: str, value: Any) -> Callable[[Message], None]:
    *parents, leaf = path.split(".")

    def change(message: Message) -> None:
        for key in parents:
            message = message[key]
        message[leaf] = value

    return change


def _drop(key: str) -> Callable[[Message], None]:
    def change(message: Message) -> None:
        del message[key]

    return change


BROKEN = {
    "no event id": (_drop("event_id"), "required"),
    "an event id that is no uuid": (_set("event_id", "event-1"), "format"),
    "an unknown event type": (_set("event_type", "video.exploded"), "enum"),
    "a status with another's event type": (_set("event_type", "video.failed"), "const"),
    "a major version we do not publish": (_set("version", "2.0"), "pattern"),
    "a time with no zone": (_set("occurred_at", "2026-11-21T10:00:00"), "pattern"),
    "a negative size": (_set("source.size", -1), "minimum"),
    "a digest that is no sha256": (_set("video.sha256", "ab"), "pattern"),
    "a cost as text": (_set("estimated_cost_usd", "1.56"), "type"),
    "a cost below zero": (_set("estimated_cost_usd", -0.1), "minimum"),
    "no receipt time": (_set("timings.received_at", None), "type"),
    "an unknown resolution": (_set("options.resolution", "4K"), "enum"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_schema_refuses_a_broken_message(case: str) -> None:
    # Given a valid message, broken in one way
    break_it, keyword = BROKEN[case]
    message = build_message(finished(TaskStatus.SUCCEEDED))
    schema = validator()
    assert not list(schema.iter_errors(message))
    broken = copy.deepcopy(message)
    break_it(broken)

    # Then the schema refuses it, for that reason
    keywords = {error.validator for error in schema.iter_errors(broken)}
    keywords |= {sub.validator for e in schema.iter_errors(broken) for sub in e.context or ()}
    assert keyword in keywords, keywords


# -- the documented filter policies and event patterns ---------------------------------------------


def documented(section: str) -> dict[str, tuple[dict[str, Any], str]]:
    """The `#### name` examples of a `## section` of docs/notifications.md: name -> (its JSON,
    the text between the heading and the block)."""
    text = DOC.read_text()
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert found, f"docs/notifications.md has no section {section!r}"
    examples = re.findall(r"^#### (.+?)\n(.*?)```json\n(.*?)\n```", found.group(1), flags=re.M | re.S)
    return {name.strip(): (json.loads(block), between) for name, between, block in examples}


def _cost(message: Message) -> float:
    cost = message["estimated_cost_usd"]
    return -1.0 if cost is None else float(cost)


# What each documented example should let through, said again in Python.
SNS_POLICIES: dict[str, Callable[[Message], bool]] = {
    "One event type": lambda m: m["event_type"] == "video.succeeded",
    "Everything but successes": lambda m: m["status"] != "SUCCEEDED",
    "Failures and time-outs on one route": lambda m: (
        m["status"] in {"FAILED", "TIMED_OUT"} and m["provider"]["name"] == "fal"
    ),
    "Successes at 1080P": lambda m: m["status"] == "SUCCEEDED" and m["options"]["resolution"] == "1080P",
    "Images refused for their size": lambda m: (
        m["status"] == "REJECTED" and m["error"]["code"].startswith("IMAGE_")
    ),
    "Tasks estimated at a dollar or more": lambda m: _cost(m) >= 1,
}
EVENT_PATTERNS: dict[str, Callable[[Message], bool]] = {
    "Every notification of the stack": lambda m: True,
    "Failures and time-outs": lambda m: m["event_type"] in {"video.failed", "video.timed_out"},
    "Paid failures on one route": lambda m: (
        m["event_type"] in {"video.failed", "video.timed_out"}
        and m["provider"]["name"] == "fal"
        and _cost(m) > 0
    ),
    "Videos stored under one folder": lambda m: (
        m["video"] is not None and m["video"]["key"].startswith("videos/holiday/")
    ),
}


def subscribe(aws: Aws, name: str, policy: dict[str, Any], scope: str) -> str:
    queue_url: str = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.sns.subscribe(
        TopicArn=aws.topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"FilterPolicy": json.dumps(policy), "FilterPolicyScope": scope},
    )
    return queue_url


def bodies(aws: Aws, queue_url: str) -> list[Message]:
    return [json.loads(envelope["Message"]) for envelope in published(aws.sqs, queue_url)]


def ids(messages: list[Message]) -> list[str]:
    return sorted(m["task_id"] for m in messages)


def test_each_documented_filter_policy_lets_through_exactly_its_messages(aws: Aws) -> None:
    # Given a queue subscribed with each filter policy of the docs, in its scope
    policies = documented("Filter policies")
    assert set(policies) == set(SNS_POLICIES)
    queues = {}
    for number, (name, (policy, text)) in enumerate(policies.items()):
        scope = "MessageBody" if "FilterPolicyScope: MessageBody" in text else "MessageAttributes"
        queues[name] = subscribe(aws, f"policy-{number}", policy, scope)

    # When every event type of each variant is published
    messages = publish_every_event(aws, SnsNotifier(aws.sns, aws.topic_arn))

    # Then each queue got exactly the messages its policy describes, and none let all through
    for name, queue_url in queues.items():
        expected = ids([m for m in messages if SNS_POLICIES[name](m)])
        assert ids(bodies(aws, queue_url)) == expected, name
        assert 0 < len(expected) < len(messages), name


def test_a_policy_on_each_event_type_gets_that_type_only(aws: Aws) -> None:
    # Given one queue per event type, filtered on the `event_type` attribute
    queues = {
        event_type: subscribe(aws, f"type-{n}", {"event_type": [event_type]}, "MessageAttributes")
        for n, event_type in enumerate(EVENT_TYPES.values())
    }

    # When every event type is published
    messages = publish_every_event(aws, SnsNotifier(aws.sns, aws.topic_arn))

    # Then each queue holds its type's messages, one per variant
    for event_type, queue_url in queues.items():
        received = bodies(aws, queue_url)
        assert ids(received) == ids([m for m in messages if m["event_type"] == event_type])
        assert len(received) == len(VARIANTS)


def test_each_documented_event_pattern_routes_exactly_its_events(aws: Aws) -> None:
    # Given the stack's bus on moto, with a rule per documented pattern, each to its queue
    events = boto3.client("events")
    bus = events.create_event_bus(Name="stack-notifications")["EventBusArn"]
    patterns = documented("EventBridge")
    assert set(patterns) == set(EVENT_PATTERNS)
    queues = {}
    for number, (name, (pattern, _)) in enumerate(patterns.items()):
        queue_url = aws.sqs.create_queue(QueueName=f"rule-{number}")["QueueUrl"]
        arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        events.put_rule(Name=f"rule-{number}", EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule=f"rule-{number}", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn["QueueArn"]}]
        )
        queues[name] = queue_url

    # When every event type is published with the bus on
    notifier = SnsNotifier(aws.sns, aws.topic_arn, events_client=events, event_bus="stack-notifications")
    messages = publish_every_event(aws, notifier)

    # Then each rule's queue got exactly its events, each the same message as the topic's
    by_id = {m["task_id"]: m for m in messages}
    for name, queue_url in queues.items():
        received = [json.loads(body) for body in drain(aws, queue_url)]
        assert {(e["source"], e["detail-type"]) for e in received} <= {
            (EVENT_SOURCE, t) for t in EVENT_TYPES.values()
        }
        assert all(e["detail"] == by_id[e["detail"]["task_id"]] for e in received), name
        assert ids([e["detail"] for e in received]) == ids(
            [m for m in messages if EVENT_PATTERNS[name](m)]
        ), name


def drain(aws: Aws, queue_url: str) -> list[str]:
    found: list[str] = []
    while batch := aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            found.append(message["Body"])
            aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found
