"""Notification messages: versioned, stable event ids, filterable attributes; published to SNS."""

from __future__ import annotations

import json

import pytest

from i2v.domain import ErrorInfo, Options, ProviderRef, SourceObject, Task, TaskStatus, VideoObject
from i2v.notify import EVENT_TYPES, SnsNotifier, build_message, event_id
from tests.support.aws import published
from tests.unit.conftest import Aws


def finished(status: TaskStatus) -> Task:
    return Task(
        task_id="t-1",
        status=status,
        received_at=1000.0,
        submitted_at=1002.5,
        completed_at=1060.0,
        finished_at=1065.0,
        updated_at=1065.0,
        source=SourceObject(bucket="media", key="incoming/cat.png", size=10, width=800, height=600),
        provider=ProviderRef(name="magnific", task_id="p-1"),
        options=Options(prompt="hop"),
        video=VideoObject(bucket="media", key="videos/cat/t-1.mp4", size=5, sha256="ab" * 32)
        if status is TaskStatus.SUCCEEDED
        else None,
        error=None if status is TaskStatus.SUCCEEDED else ErrorInfo(code="X", message="why"),
        estimated_cost_usd=1.56,
    )


def test_a_success_message_carries_source_video_options_and_timings() -> None:
    message = build_message(finished(TaskStatus.SUCCEEDED))
    assert message["version"] == "1.1" and message["event_type"] == "video.succeeded"
    assert message["video"]["key"] == "videos/cat/t-1.mp4" and message["source"]["width"] == 800
    assert message["timings"]["generation_seconds"] == 57.5 and message["timings"]["total_seconds"] == 65.0
    assert message["occurred_at"] == "1970-01-01T00:17:45.000Z"
    assert message["error"] is None and message["options"]["prompt"] == "hop"


@pytest.mark.parametrize("status", list(EVENT_TYPES))
def test_every_message_carries_its_event_type_and_the_tasks_estimate(status: TaskStatus) -> None:
    # Given a task in an announced status, with an estimate and without one (a route with no price)
    task = finished(status)

    # Then its message names its type and carries the estimate, whatever the outcome
    message = build_message(task)
    assert (message["event_type"], message["status"]) == (EVENT_TYPES[status], status.value)
    assert message["estimated_cost_usd"] == 1.56
    assert build_message(task.model_copy(update={"estimated_cost_usd": None}))["estimated_cost_usd"] is None


def test_an_event_that_ends_nothing_occurs_at_the_tasks_last_change() -> None:
    # Given a task with no finish time (an event that does not end it)
    task = finished(TaskStatus.FAILED).model_copy(update={"finished_at": None, "updated_at": 1070.0})

    # Then its message's time is the task's last change, and its finish is null
    message = build_message(task)
    assert message["occurred_at"] == "1970-01-01T00:17:50.000Z"
    assert message["timings"]["finished_at"] is None and message["timings"]["total_seconds"] is None


def test_event_ids_are_stable_per_outcome() -> None:
    assert event_id(finished(TaskStatus.FAILED)) == event_id(finished(TaskStatus.FAILED))
    assert event_id(finished(TaskStatus.FAILED)) != event_id(finished(TaskStatus.TIMED_OUT))


def test_an_open_task_has_no_message() -> None:
    with pytest.raises(ValueError, match="RUNNING, which has no notification"):
        build_message(finished(TaskStatus.RUNNING))


@pytest.mark.parametrize("status", list(EVENT_TYPES))
def test_published_to_sns_with_filter_attributes(aws: Aws, status: TaskStatus) -> None:
    SnsNotifier(aws.sns, aws.topic_arn).publish(finished(status))
    [envelope] = published(aws.sqs, aws.tap_url)
    body = json.loads(envelope["Message"])
    assert body["status"] == status.value
    attributes = {k: (v["Type"], v["Value"]) for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {
        "event_type": ("String", body["event_type"]),
        "status": ("String", status.value),
        "provider": ("String", "magnific"),
        "estimated_cost_usd": ("Number", "1.56"),
    }


def test_a_task_without_an_estimate_has_no_cost_attribute(aws: Aws) -> None:
    SnsNotifier(aws.sns, aws.topic_arn).publish(
        finished(TaskStatus.FAILED).model_copy(update={"estimated_cost_usd": None})
    )
    [envelope] = published(aws.sqs, aws.tap_url)
    assert set(envelope["MessageAttributes"]) == {"event_type", "status", "provider"}
    assert json.loads(envelope["Message"])["estimated_cost_usd"] is None


def test_the_documented_examples_match_the_messages_we_build() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(\{.*?\})\n```", doc, flags=re.S)]
    messages = [m for m in examples if "event_id" in m]
    assert {m["status"] for m in messages} == {status.value for status in EVENT_TYPES}
    for documented in messages:
        built = build_message(finished(TaskStatus(documented["status"])))
        assert documented.keys() == built.keys()
        for section in ("source", "timings", "options", "provider"):
            assert documented[section].keys() == built[section].keys()
