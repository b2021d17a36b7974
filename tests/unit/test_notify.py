"""Notification messages: versioned, stable event ids, filterable attributes; published to SNS."""

from __future__ import annotations

import json

import pytest

from i2v.domain import ErrorInfo, Options, ProviderRef, SourceObject, Task, TaskStatus, VideoObject
from i2v.notify import SnsNotifier, build_message, event_id
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
        video=VideoObject(bucket="media", key="videos/cat/t-1.mp4", size=5, sha256="ab")
        if status is TaskStatus.SUCCEEDED
        else None,
        error=None if status is TaskStatus.SUCCEEDED else ErrorInfo(code="X", message="why"),
        estimated_cost_usd=1.56,
    )


def test_a_success_message_carries_source_video_options_and_timings() -> None:
    message = build_message(finished(TaskStatus.SUCCEEDED))
    assert message["version"] == "1.0" and message["event_type"] == "video.succeeded"
    assert message["video"]["key"] == "videos/cat/t-1.mp4" and message["source"]["width"] == 800
    assert message["timings"]["generation_seconds"] == 57.5 and message["timings"]["total_seconds"] == 65.0
    assert message["occurred_at"] == "1970-01-01T00:17:45.000Z"
    assert message["error"] is None and message["options"]["prompt"] == "hop"


def test_event_ids_are_stable_per_outcome() -> None:
    assert event_id(finished(TaskStatus.FAILED)) == event_id(finished(TaskStatus.FAILED))
    assert event_id(finished(TaskStatus.FAILED)) != event_id(finished(TaskStatus.TIMED_OUT))


def test_an_open_task_has_no_message() -> None:
    with pytest.raises(ValueError, match="not in a terminal state"):
        build_message(finished(TaskStatus.RUNNING))


@pytest.mark.parametrize(
    "status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED, TaskStatus.TIMED_OUT]
)
def test_published_to_sns_with_filter_attributes(aws: Aws, status: TaskStatus) -> None:
    SnsNotifier(aws.sns, aws.topic_arn).publish(finished(status))
    [envelope] = published(aws.sqs, aws.tap_url)
    body = json.loads(envelope["Message"])
    assert body["status"] == status.value
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {"event_type": body["event_type"], "status": status.value, "provider": "magnific"}


def test_the_documented_examples_match_the_messages_we_build() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(\{.*?\})\n```", doc, flags=re.S)]
    messages = [m for m in examples if "event_id" in m]
    assert {m["status"] for m in messages} == {"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT"}
    for documented in messages:
        built = build_message(finished(TaskStatus(documented["status"])))
        assert documented.keys() == built.keys()
        for section in ("source", "timings", "options", "provider"):
            assert documented[section].keys() == built[section].keys()
