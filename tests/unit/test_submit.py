"""The submit use case with moto S3/DynamoDB and a fake provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from i2v.domain import Options, TaskStatus, derive_task_id
from i2v.errors import ProviderRejected, ProviderUnavailable
from i2v.redelivery import backoff_seconds
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from i2v.usecases.submit import SubmitConfig, SubmitOutcome, Upload, submit_upload, uploads_in
from tests.support.fakes import Clock, FakeProvider, FakeRouting, Notifications, RecordingMetrics, image_bytes
from tests.unit.conftest import Aws

CONFIG = SubmitConfig(
    defaults=Options(prompt="a gentle breeze", resolution="720P", duration=5),
    incoming_prefix="incoming/",
    webhook_base_url="https://hooks.example.com/",
    presign_expiry_seconds=900,
)


def upload(aws: Aws, key: str, body: bytes, metadata: dict[str, str] | None = None) -> Upload:
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body, Metadata=metadata or {})
    return Upload(
        bucket=aws.bucket,
        key=key,
        size=len(body),
        version_id=None,
        sequencer="0055AED6DCD90281E5",
        etag="e",
        event_time="2026-11-21T10:00:00.000Z",
    )


@pytest.fixture
def run(
    aws: Aws,
    store: TaskStore,
    provider: FakeProvider,
    notifications: Notifications,
    metrics: RecordingMetrics,
    clock: Clock,
) -> Any:
    sources = SourceStore(aws.s3, bucket=aws.bucket, incoming_prefix="incoming/")

    endings = Endings(store=store, notify=notifications, metrics=metrics, clock=clock)

    def submit(item: Upload, config: SubmitConfig = CONFIG, owner: str = "msg-1") -> SubmitOutcome:
        return submit_upload(
            item,
            owner=owner,
            config=config,
            store=store,
            sources=sources,
            routing=FakeRouting({provider.name: provider}),
            endings=endings,
            metrics=metrics,
            clock=clock,
        )

    return submit


def test_a_valid_image_is_submitted_with_a_webhook_and_presigned_url(
    run: Any, aws: Aws, store: TaskStore, provider: FakeProvider, notifications: Notifications
) -> None:
    # Given a valid image with a prompt in percent-encoded UTF-8 metadata
    item = upload(
        aws,
        "incoming/été/cat 1.png",
        image_bytes(800, 600),
        {"prompt": "un%20chat%20qui%20saute%20%C3%A9", "duration": "7"},
    )
    # When it is submitted
    outcome = run(item)
    # Then the provider got one task with our options, a presigned URL and a tokenised webhook
    assert outcome is SubmitOutcome.SUBMITTED
    [request] = provider.submitted
    task_id = derive_task_id(aws.bucket, "incoming/été/cat 1.png", "0055AED6DCD90281E5")
    assert request.options == Options(prompt="un chat qui saute é", resolution="720P", duration=7)
    assert request.webhook_url is not None
    assert request.webhook_url.startswith(f"https://hooks.example.com/callbacks/magnific/{task_id}?token=")
    assert "X-Amz-Signature=" in request.image_url or "Signature=" in request.image_url
    task = store.get(task_id)
    assert task is not None and task.status is TaskStatus.SUBMITTED
    assert task.provider.task_id == "prov-1"
    assert (task.source.width, task.source.height, task.source.image_format) == (800, 600, "png")
    token = request.webhook_url.split("token=")[1]
    assert task.token_hash is not None and token not in task.token_hash
    assert task.estimated_cost_usd == pytest.approx(0.7)
    assert notifications.sent == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"this is not an image at all", "UNSUPPORTED_FORMAT"),
        (image_bytes(200, 800), "IMAGE_TOO_SMALL"),
        (image_bytes(1000, 300), "BAD_ASPECT_RATIO"),
        (image_bytes(640, 480, "GIF"), "UNSUPPORTED_FORMAT"),
    ],
)
def test_an_invalid_image_is_rejected_with_its_reason_and_no_provider_call(
    run: Any,
    aws: Aws,
    store: TaskStore,
    provider: FakeProvider,
    notifications: Notifications,
    body: bytes,
    code: str,
) -> None:
    outcome = run(upload(aws, "incoming/photo.jpg", body))
    assert outcome is SubmitOutcome.REJECTED
    assert provider.submitted == []
    [task] = notifications.sent
    assert task.status is TaskStatus.REJECTED
    assert task.error is not None and task.error.code == code and task.error.message
    stored = store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.REJECTED and not stored.notify_pending
    assert list(store.list_open(older_than=float("inf"))) == []


@pytest.mark.parametrize(
    ("metadata", "code", "needle"),
    [
        ({"duration": "20"}, "INVALID_OPTIONS", "duration"),
        ({"resolution": "4K"}, "INVALID_OPTIONS", "resolution"),
        ({"seed": "-1"}, "INVALID_OPTIONS", "seed"),
        ({"prompt": "x" * 5001}, "INVALID_OPTIONS", "prompt"),
        # Valid options, beyond the route's own rules (Magnific's: 2,500 characters)
        ({"prompt": "x" * 2501}, "UNSUPPORTED_OPTION", "prompt of 2501 characters (takes up to 2500)"),
    ],
)
def test_bad_options_are_rejected_before_any_paid_call(
    run: Any,
    aws: Aws,
    provider: FakeProvider,
    notifications: Notifications,
    metadata: dict[str, str],
    code: str,
    needle: str,
) -> None:
    assert run(upload(aws, "incoming/a.png", image_bytes(), metadata)) is SubmitOutcome.REJECTED
    assert provider.submitted == []
    [task] = notifications.sent
    assert task.error is not None and task.error.code == code and needle in task.error.message


def test_a_sidecar_overrides_metadata_which_overrides_defaults(
    run: Any, aws: Aws, provider: FakeProvider
) -> None:
    # Given a sidecar with a long prompt, uploaded first
    long_prompt = "ü" * 2500
    sidecar = upload(aws, "incoming/a.options.json", json.dumps({"prompt": long_prompt, "seed": 42}).encode())
    item = upload(
        aws,
        "incoming/a.png",
        image_bytes(),
        {"options": "incoming/a.options.json", "prompt": "short", "resolution": "1080p"},
    )
    # When both events arrive
    assert run(sidecar) is SubmitOutcome.SKIPPED
    assert run(item) is SubmitOutcome.SUBMITTED
    # Then the sidecar wins over the metadata, which wins over the defaults
    assert provider.submitted[0].options == Options(
        prompt=long_prompt, resolution="1080P", duration=5, seed=42
    )


def test_a_missing_sidecar_is_rejected_with_advice(run: Any, aws: Aws, notifications: Notifications) -> None:
    assert (
        run(upload(aws, "incoming/a.png", image_bytes(), {"options": "incoming/none.json"}))
        is SubmitOutcome.REJECTED
    )
    assert "upload it before the image" in notifications.sent[0].error.message  # type: ignore[union-attr]


def test_a_duplicate_event_submits_once(run: Any, aws: Aws, provider: FakeProvider) -> None:
    item = upload(aws, "incoming/a.png", image_bytes())
    assert run(item) is SubmitOutcome.SUBMITTED
    assert run(item, owner="msg-2") is SubmitOutcome.DUPLICATE
    assert run(item) is SubmitOutcome.DUPLICATE
    assert len(provider.submitted) == 1


def test_a_rejection_redelivered_after_its_process_died_is_announced_again(
    run: Any, aws: Aws, store: TaskStore, notifications: Notifications
) -> None:
    # Given a rejection whose terminal write landed but whose process died before the publish
    notifications.fail_next = 0
    item = upload(aws, "incoming/bad.png", b"not an image")
    assert run(item) is SubmitOutcome.REJECTED
    notifications.sent.clear()
    # When the same message comes back, the rejection is announced again; another message's is not
    assert run(item, owner="msg-2") is SubmitOutcome.DUPLICATE
    assert notifications.sent == []
    assert run(item) is SubmitOutcome.DUPLICATE
    assert [t.status for t in notifications.sent] == [TaskStatus.REJECTED]


def test_a_provider_outage_keeps_the_task_for_the_next_delivery(
    run: Any, aws: Aws, store: TaskStore, provider: FakeProvider, metrics: RecordingMetrics
) -> None:
    # Given a provider answering 503 once
    provider.submit_errors.append(ProviderUnavailable("503", retry_after=30))
    item = upload(aws, "incoming/a.png", image_bytes())
    # When the upload is submitted, the outage propagates for the queue to retry
    with pytest.raises(ProviderUnavailable):
        run(item)
    task_id = derive_task_id(aws.bucket, item.key, item.version)
    held = store.get(task_id)
    assert held is not None and held.status is TaskStatus.RECEIVED and held.lease_until is None
    # Then the redelivered message submits it, with a new callback token
    assert run(item) is SubmitOutcome.SUBMITTED
    done = store.get(task_id)
    assert done is not None and done.status is TaskStatus.SUBMITTED and done.submit_attempts == 2
    assert done.token_hash != held.token_hash
    assert metrics.total("ProviderUnavailable") == 1


def test_a_provider_validation_error_fails_the_task_with_its_reason(
    run: Any, aws: Aws, provider: FakeProvider, notifications: Notifications
) -> None:
    provider.submit_errors.append(
        ProviderRejected("Magnific answered 400: prompt: too long", code="PROVIDER_HTTP_400")
    )
    assert run(upload(aws, "incoming/a.png", image_bytes())) is SubmitOutcome.FAILED
    [task] = notifications.sent
    assert task.status is TaskStatus.FAILED
    assert (
        task.error is not None and task.error.code == "PROVIDER_HTTP_400" and "too long" in task.error.message
    )


@pytest.mark.parametrize("key", ["incoming/", "other/a.png", "incoming/a.JSON"])
def test_folders_other_prefixes_and_sidecars_are_skipped(run: Any, aws: Aws, key: str) -> None:
    item = Upload(
        bucket=aws.bucket, key=key, size=0, version_id=None, sequencer="1", etag=None, event_time=None
    )
    assert run(item) is SubmitOutcome.SKIPPED


def test_uploads_in_decodes_keys_and_skips_test_events() -> None:
    message = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-21T10:00:00.000Z",
                "s3": {
                    "bucket": {"name": "media"},
                    "object": {
                        "key": "incoming/my+holiday/caf%C3%A9+%C3%A0+la+plage%2B1.jpg",
                        "size": 5,
                        "sequencer": "0A",
                    },
                },
            }
        ]
    }
    [item] = uploads_in(message)
    assert item.key == "incoming/my holiday/café à la plage+1.jpg"
    assert item.version == "0A"
    assert list(uploads_in({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "media"})) == []


def test_backoff_grows_honours_retry_after_and_is_capped() -> None:
    delays = [backoff_seconds(n, base=10, cap=900, retry_after=None) for n in range(1, 10)]
    assert all(1 <= d <= 900 for d in delays)
    assert backoff_seconds(6, base=10, cap=900, retry_after=None) >= 160
    assert backoff_seconds(1, base=10, cap=900, retry_after=120) >= 120
    assert backoff_seconds(20, base=10, cap=900, retry_after=5000) == 900


def test_a_rejection_reports_what_was_learnt_about_the_upload(
    run: Any, aws: Aws, notifications: Notifications
) -> None:
    # Given a too-small image uploaded with valid options
    item = upload(aws, "incoming/small.png", image_bytes(200, 300), {"prompt": "hop", "duration": "4"})
    # When it is rejected
    assert run(item) is SubmitOutcome.REJECTED
    # Then the notification still says what the image and the options were
    [task] = notifications.sent
    assert (task.source.width, task.source.height, task.source.image_format) == (200, 300, "png")
    assert task.options == Options(prompt="hop", resolution="720P", duration=4)
    assert task.error is not None and task.error.code == "IMAGE_TOO_SMALL"


def test_a_bad_image_is_the_reason_given_before_bad_options(
    run: Any, aws: Aws, notifications: Notifications
) -> None:
    assert run(upload(aws, "incoming/x.png", b"GIF89a....", {"duration": "99"})) is SubmitOutcome.REJECTED
    assert notifications.sent[0].error is not None
    assert notifications.sent[0].error.code == "UNSUPPORTED_FORMAT"
