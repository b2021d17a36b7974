"""How an upload ends on every route: a video, the provider's failure, a rejection before any
paid call, create calls retried after errors, and a provider task that is gone."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from i2v.domain import Options
from i2v.providers.route import MODEL_VERSIONS, RouteSettings
from tests.contract.checks import (
    RouteUnderTest,
    assert_no_video,
    assert_one_notification,
    assert_one_video,
    image,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_an_upload_becomes_one_stored_video_and_one_notification(route: RouteUnderTest) -> None:
    # Given a valid image with a prompt and a duration
    metadata = {"prompt": "a horse trots along the beach", "duration": "3"}

    # When it is uploaded
    key = route.upload("happy-path", metadata=metadata)
    task = route.finished(key)

    # Then the task succeeded on this route, through one paid create call
    assert task["status"] == "SUCCEEDED", task.get("error")
    assert task["provider"]["name"] == route.name
    assert task["options"]["prompt"] == metadata["prompt"]
    (create,) = route.create_requests(key)
    assert create["task_id"] == task["provider"]["task_id"]
    # and its video is one playable MP4 of the asked duration, stored as the item says
    assert assert_one_video(route, task) == pytest.approx(3.0, abs=0.2)
    # and one notification says so
    notification = assert_one_notification(route, task)
    assert notification.attributes["event_type"] == "video.succeeded"
    assert notification.message["video"] == task["video"]


def test_a_task_the_provider_fails_ends_failed_with_its_reason(route: RouteUnderTest) -> None:
    # Given a provider that fails the next task
    route.simulator.set_faults(fail_tasks=1)

    # When an image is uploaded
    key = route.upload("provider-fails")
    task = route.finished(key)

    # Then the task FAILED with the provider's reason, as far as its answer gives one
    assert task["status"] == "FAILED"
    error = task["error"]
    assert error["code"].startswith("PROVIDER_"), error
    reason = route.provider_task(task)["failure_reason"]
    assert reason
    if route.contract.failure_reason_on_wire:
        assert reason in error["message"], error
    else:
        assert error["message"], error
    # and no video was stored, and one notification carries the error
    assert_no_video(route, task)
    assert assert_one_notification(route, task).attributes["event_type"] == "video.failed"


@dataclass(frozen=True)
class Refusal:
    """An upload one of the route's rules refuses, and how the rejection must name the rule.
    Its options go in a JSON sidecar: a long prompt does not fit in S3 metadata (2 KB)."""

    rule: str
    content: bytes
    code: str
    names: str
    options: dict[str, Any] = field(default_factory=lambda: {"duration": 3})


def refusals(settings: RouteSettings) -> list[Refusal]:
    """One upload per input rule of the route that an upload can break and the upload's own
    checks (the Options model, the image reader) let through to the route."""
    found = [
        Refusal(f"format-{name}", image(640, 360, pillow_format), "UNSUPPORTED_IMAGE_FORMAT", name.upper())
        for name, pillow_format in (("jpeg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("webp", "WEBP"))
        if name not in settings.image_formats
    ]
    side = settings.image_min_side_px
    if side > 1:
        found.append(Refusal("too-small", image(side + 100, side - 1), "IMAGE_TOO_SMALL", f"{side} px"))
    ratio = settings.image_max_aspect_ratio
    if ratio is not None:
        short = max(side, 320)
        wide = image(int(short * ratio) + 40, short)
        found.append(Refusal("too-wide", wide, "BAD_ASPECT_RATIO", f"{ratio:g}:1"))
    found += [
        Refusal(f"option-{rule}-{i}", image(), "UNSUPPORTED_OPTION", rule, {"duration": 3} | asked)
        for i, (rule, asked) in enumerate(_options_refused(settings))
    ]
    return found


def _options_refused(settings: RouteSettings) -> list[tuple[str, dict[str, Any]]]:
    """(the rule, options) inside what any upload may ask (the Options model) but outside
    what the route takes."""
    schema = Options.model_json_schema()["properties"]
    refused: list[tuple[str, dict[str, Any]]] = []
    if settings.duration_max < schema["duration"]["maximum"]:
        refused.append(("duration", {"duration": settings.duration_max + 1}))
    if settings.duration_min > schema["duration"]["minimum"]:
        refused.append(("duration", {"duration": settings.duration_min - 1}))
    refused += [
        ("resolution", {"resolution": resolution})
        for resolution in schema["resolution"]["enum"]
        if resolution not in settings.resolutions
    ]
    if settings.prompt_max_chars < schema["prompt"]["maxLength"]:
        refused.append(("prompt", {"prompt": "a" * (settings.prompt_max_chars + 1)}))
    refused += [
        ("HappyHorse", {"model": version}) for version in MODEL_VERSIONS if settings.model_id(version) is None
    ]
    return refused


def test_an_upload_the_route_refuses_is_rejected_before_any_paid_call(route: RouteUnderTest) -> None:
    # Given one upload per rule of the route's settings that an upload can break
    refused = refusals(route.settings)
    if not refused:
        pytest.skip(f"{route.name}'s settings refuse no image or option an upload can carry")

    # When they are uploaded
    keys = {
        refusal.rule: route.upload(refusal.rule, refusal.content, options=refusal.options)
        for refusal in refused
    }
    tasks = {rule: route.finished(key) for rule, key in keys.items()}

    # Then each is REJECTED with a reason naming the rule it breaks
    outcomes = {rule: (task["status"], task.get("error", {}).get("code")) for rule, task in tasks.items()}
    assert outcomes == {refusal.rule: ("REJECTED", refusal.code) for refusal in refused}
    for refusal in refused:
        assert refusal.names in tasks[refusal.rule]["error"]["message"], tasks[refusal.rule]["error"]
    # and the provider never got a create call for any of them
    assert {rule: route.create_requests(key) for rule, key in keys.items()} == {rule: [] for rule in keys}
    # and each has one notification and no video
    for i, task in enumerate(tasks.values()):
        assert_no_video(route, task)
        notification = assert_one_notification(route, task, settle=i == 0, of_route=False)
        assert notification.attributes["event_type"] == "video.rejected"


def test_a_rejection_names_the_route_whose_rule_refused_it(route: RouteUnderTest) -> None:
    # Given an upload one of the route's rules refuses
    refused = refusals(route.settings)
    if not refused:
        pytest.skip(f"{route.name}'s settings refuse no image or option an upload can carry")
    refusal = refused[0]

    # When it is uploaded
    task = route.finished(route.upload(refusal.rule, refusal.content, options=refusal.options))

    # Then the task and its notification name the route whose rule refused it
    assert task["status"] == "REJECTED", task.get("error")
    assert task["provider"]["name"] == route.name
    assert_one_notification(route, task)


def test_every_version_the_route_offers_and_its_duration_bounds_are_taken(route: RouteUnderTest) -> None:
    # Given uploads asking for each HappyHorse version the route offers at its shortest
    # duration, and for its longest duration
    settings = route.settings
    asked = [
        {"model": version, "duration": str(settings.duration_min)} for version in settings.model_versions
    ]
    asked.append({"duration": str(settings.duration_max)})

    # When they are uploaded
    keys = [route.upload(f"options-{i}", metadata=metadata) for i, metadata in enumerate(asked)]
    tasks = [route.finished(key) for key in keys]

    # Then each became a video of its duration, made by that version's model
    assert [(task["status"], task.get("error")) for task in tasks] == [("SUCCEEDED", None)] * len(asked)
    for metadata, key, task in zip(asked, keys, tasks, strict=True):
        duration = int(metadata["duration"])
        assert task["options"]["duration"] == duration
        assert task["options"].get("model") == metadata.get("model")
        (create,) = route.create_requests(key)
        assert create["model"] == settings.model_id(metadata.get("model", "1.0"))
        assert assert_one_video(route, task) == pytest.approx(duration, abs=0.2)


def test_create_call_errors_are_retried_with_backoff_until_the_task_succeeds(route: RouteUnderTest) -> None:
    # Given a provider that answers the next create calls 429 (Retry-After: 1 s), then 503
    route.simulator.set_faults(submit_errors=[429, 503], retry_after=1)

    # When an image is uploaded
    key = route.upload("create-retried")
    task = route.finished(key, timeout=90)

    # Then each error was retried after a backoff, and the third call made the one task
    assert task["status"] == "SUCCEEDED", task.get("error")
    calls = route.create_requests(key)
    assert [call["response_status"] for call in calls[:2]] == [429, 503]
    assert len(calls) == 3 and 200 <= calls[2]["response_status"] < 300, calls
    gaps = [later["received_at"] - earlier["received_at"] for earlier, later in pairwise(calls)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    assert [call["task_id"] for call in calls if call["task_id"]] == [task["provider"]["task_id"]]
    assert task["submit_attempts"] == 3
    # and it has one video and one notification
    assert_one_video(route, task)
    assert_one_notification(route, task)


def test_a_task_the_provider_no_longer_knows_fails_as_gone(route: RouteUnderTest) -> None:
    # Given a task whose webhooks are lost and which its provider forgets as soon as it made
    # it (as it does an expired one): only a status read can end it
    route.simulator.set_faults(drop_webhooks=1)
    key = route.upload("provider-forgot")
    assert route.simulator.forget(route.created_task_id(key))

    # When its next status read (a poll, or the reconciler on a webhook route) finds it gone
    task = route.finished(key)

    # Then it FAILED as gone, with no video and one notification
    assert task["status"] == "FAILED"
    assert task["error"]["code"] == "PROVIDER_TASK_GONE", task["error"]
    assert task["completed_via"] in _status_readers(route), task["completed_via"]
    assert_no_video(route, task)
    assert assert_one_notification(route, task).attributes["event_type"] == "video.failed"


def _status_readers(route: RouteUnderTest) -> set[str]:
    """What may read a task's status: the reconciler, and a polling route's poll chain."""
    return {"reconcile"} if route.takes_webhooks else {"poll", "reconcile"}
