"""Hostile object keys, from the upload to the stored video, on moto.

The S3 event comes from moto's own bucket notification (keys URL-encoded as S3 encodes
them: `+` for a space); the submit and finalize use cases run with the real task store,
source store and bucket, and a fake provider that records what it was asked to make. The
one rule checked on every key: a video is only ever written under `videos/`, to a key
with no empty, `.` or `..` segment and no backslash, within S3's 1,024 bytes, or the
upload is skipped or rejected with its reason before any paid call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from i2v.domain import Options, TaskStatus
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.usecases.finalize import FinalizeConfig, FinalizeOutcome, Finalizer
from i2v.usecases.outcome import Endings
from i2v.usecases.progress import FinalizeOrder, Progress, apply_update
from i2v.usecases.submit import SubmitConfig, SubmitOutcome, Upload, submit_upload, uploads_in
from tests.support.aws import create_tasks_table
from tests.support.fakes import FakeProvider, FakeRouting, Notifications, RecordingMetrics, image_bytes

pytestmark = pytest.mark.timeout(60)

BUCKET = "media"
S3_MAX_KEY_BYTES = 1024
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
CONFIG = SubmitConfig(
    defaults=Options(prompt="", resolution="720P", duration=5),
    incoming_prefix="incoming/",
    webhook_base_url="https://hooks.example.com/",
    presign_expiry_seconds=900,
    videos_prefix="videos/",
)
# "videos/" + the stem + "/" + a 36-character task id + ".mp4"
VIDEO_KEY_OVERHEAD = len("videos/") + 1 + 36 + len(".mp4")


@dataclass(frozen=True)
class Stored:
    size: int
    sha256: str
    content_type: str = "video/mp4"


@dataclass
class World:
    s3: Any
    sqs: Any
    store: TaskStore
    events_url: str
    provider: FakeProvider
    notifications: Notifications
    uploaded: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    """The keys the video download was told to write."""

    def upload(self, key: str) -> Upload:
        """Put an image at `key`; the Upload its S3 notification describes."""
        return self._event_for(key)[0]

    def raw_key_in_event(self, key: str) -> str:
        """The key as the S3 notification for a new object at `key` carries it."""
        return self._event_for(key)[1]

    def _event_for(self, key: str) -> tuple[Upload, str]:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=image_bytes(800, 600))
        self.uploaded.add(key)
        # The queue also holds the events of the videos written since: those are dropped.
        while True:
            [message] = self.sqs.receive_message(QueueUrl=self.events_url, WaitTimeSeconds=1)["Messages"]
            self.sqs.delete_message(QueueUrl=self.events_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            [upload] = list(uploads_in(body))
            if upload.key == key or not upload.key.startswith("videos/"):
                return upload, str(body["Records"][0]["s3"]["object"]["key"])

    def endings(self) -> Endings:
        return Endings(
            store=self.store, notify=self.notifications, metrics=RecordingMetrics(), clock=time.time
        )

    def submit(self, upload: Upload) -> SubmitOutcome:
        return submit_upload(
            upload,
            owner=f"message-{upload.key}",
            config=CONFIG,
            store=self.store,
            sources=SourceStore(self.s3, bucket=BUCKET, incoming_prefix="incoming/"),
            routing=FakeRouting({self.provider.name: self.provider}),
            endings=self.endings(),
            metrics=RecordingMetrics(),
            clock=time.time,
        )

    def finish(self, task_id: str) -> FinalizeOutcome:
        """The provider's success webhook, then its finalize order: the video is written."""
        task = self.store.get(task_id)
        assert task is not None and task.provider.task_id is not None
        orders: list[FinalizeOrder] = []
        progress = Progress(store=self.store, enqueue=orders.append, clock=time.time)
        update = ProviderUpdate(
            provider_task_id=task.provider.task_id,
            state=ProviderState.SUCCEEDED,
            raw_status="COMPLETED",
            video_url="https://cdn.example.com/v.mp4",
        )
        apply_update(task_id, update, progress, via="callback")
        [order] = orders
        finalizer = Finalizer(
            config=FinalizeConfig(
                bucket=BUCKET, incoming_prefix="incoming/", videos_prefix="videos/", max_attempts=3
            ),
            providers=lambda name: self.provider,  # type: ignore[arg-type,return-value]
            fetch_video=self.store_video,
            stored_video=lambda key, metadata: None,
            endings=self.endings(),
            metrics=RecordingMetrics(),
        )
        return finalizer(order, attempt=1)

    def store_video(self, url: str, key: str, metadata: dict[str, str], route: str) -> Stored:
        """What the real download does at its end: one object at the key it is given."""
        self.written.append(key)
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=MP4, Metadata=metadata, ContentType="video/mp4")
        return Stored(len(MP4), hashlib.sha256(MP4).hexdigest())

    def object_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with mock_aws():
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        events_url = sqs.create_queue(QueueName="uploads")["QueueUrl"]
        events_arn = sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        # Every object, like the deployed notification's prefix-less cousin: the handler decides.
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": events_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        sqs.purge_queue(QueueUrl=events_url)  # moto's s3:TestEvent
        store = TaskStore(boto3.client("dynamodb"), create_tasks_table(boto3.client("dynamodb")))
        yield World(s3, sqs, store, events_url, FakeProvider(), Notifications())


def assert_every_video_is_under_videos(world: World) -> None:
    """The bucket holds the uploads and the videos, and each video key is a clean path."""
    assert set(world.object_keys()) == world.uploaded | set(world.written)
    for key in world.written:
        assert key.startswith("videos/"), key
        segments = key.removeprefix("videos/").split("/")
        assert "\\" not in key and not {"", ".", ".."} & set(segments), key
        assert len(key.encode("utf-8")) <= S3_MAX_KEY_BYTES, key


# -- keys that are handled ----------------------------------------------------------------

# upload key -> the video's key, with {id} for the task id
HANDLED = {
    "incoming/my holiday/beach day.png": "videos/my holiday/beach day/{id}.mp4",
    "incoming/c++ + more.png": "videos/c++ + more/{id}.mp4",
    "incoming/100% real %2B %20.png": "videos/100% real %2B %20/{id}.mp4",
    "incoming/%2541 decoded twice would be A.png": "videos/%2541 decoded twice would be A/{id}.mp4",
    "incoming/été/日本語 🐴.png": "videos/été/日本語 🐴/{id}.mp4",
    "incoming/./a/./b.png": "videos/a/b/{id}.mp4",
    "incoming//a//b.png": "videos/a/b/{id}.mp4",
    "incoming/../x.png": "videos/x/{id}.mp4",
    "incoming/a/../../../etc/passwd.png": "videos/a/etc/passwd/{id}.mp4",
    "incoming/..\\..\\windows.png": "videos/windows/{id}.mp4",
    "incoming/a\\b.png": "videos/a/b/{id}.mp4",
    "incoming/...png": "videos/...png/{id}.mp4",  # a name, not a dot segment
    "incoming/.png": "videos/.png/{id}.mp4",
    "incoming/no extension": "videos/no extension/{id}.mp4",
    "incoming/" + "a" * (S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD) + ".png": (
        "videos/" + "a" * (S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD) + "/{id}.mp4"
    ),
    "incoming/" + "é" * ((S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD) // 2) + ".jpeg": (
        "videos/" + "é" * ((S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD) // 2) + "/{id}.mp4"
    ),
}


@pytest.mark.parametrize("key", HANDLED, ids=lambda key: key[:60])
def test_a_hostile_but_valid_key_gets_its_video_under_videos(world: World, key: str) -> None:
    # Given an upload under a key with spaces, pluses, percents, non-ASCII, dot segments,
    # doubled slashes or backslashes, or the longest that fits
    upload = world.upload(key)
    # Then its S3 event, decoded exactly once, names the object itself
    assert upload.key == key
    # When it is submitted and its video comes back
    submitted = len(world.provider.submitted)
    assert world.submit(upload) is SubmitOutcome.SUBMITTED
    assert len(world.provider.submitted) == submitted + 1
    task = world.store.get(_task_id_of(upload))
    assert task is not None and task.source.key == key
    assert world.finish(task.task_id) is FinalizeOutcome.SUCCEEDED
    # Then the video is stored at its key under videos/, and nowhere else
    done = world.store.get(task.task_id)
    assert done is not None and done.status is TaskStatus.SUCCEEDED and done.video is not None
    expected = HANDLED[key].format(id=task.task_id)
    assert done.video.key == expected
    assert expected in world.object_keys()
    assert_every_video_is_under_videos(world)


def test_s3_events_carry_keys_url_encoded_and_they_are_decoded_once(world: World) -> None:
    # Given keys whose encoded and decoded forms differ
    raw = world.raw_key_in_event("incoming/a b+c%d.png")
    # Then the event carries them encoded ("+" for a space), and one decoding gives the key
    assert raw != "incoming/a b+c%d.png" and "+" in raw and "%25" in raw
    assert world.upload("incoming/a b+c%d e.png").key == "incoming/a b+c%d e.png"


# -- keys that are skipped or rejected -----------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "videos/x.png",
        "x.png",
        "incomingx.png",
        "Incoming/x.png",
        "outgoing/incoming/x.png",
        "incoming/folder/",
    ],
)
def test_a_key_outside_incoming_is_skipped_and_nothing_is_made(world: World, key: str) -> None:
    submitted, objects = len(world.provider.submitted), set(world.object_keys())
    upload = world.upload(key)
    assert world.submit(upload) is SubmitOutcome.SKIPPED
    assert len(world.provider.submitted) == submitted
    assert set(world.object_keys()) == objects | {key}
    assert world.store.get(_task_id_of(upload)) is None


@pytest.mark.parametrize(
    "key",
    [
        "incoming/" + "a" * (S3_MAX_KEY_BYTES - len("incoming/") - len(".png")) + ".png",
        "incoming/" + "a" * (S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD + 1) + ".png",
        "incoming/" + "é" * ((S3_MAX_KEY_BYTES - VIDEO_KEY_OVERHEAD) // 2 + 1) + ".png",
        "incoming/" + "日" * ((S3_MAX_KEY_BYTES - len("incoming/") - len(".png")) // 3) + ".png",
    ],
    ids=[
        "the longest key S3 allows",
        "one byte too long",
        "two bytes too long, in UTF-8",
        "CJK, near the limit",
    ],
)
def test_a_key_too_long_for_its_video_is_rejected_with_the_reason_before_any_paid_call(
    world: World, key: str
) -> None:
    # Given an upload S3 took, whose video's key would pass S3's 1,024 bytes
    assert len(key.encode("utf-8")) <= S3_MAX_KEY_BYTES
    upload = world.upload(key)
    submitted, sent = len(world.provider.submitted), len(world.notifications.sent)
    # When it is submitted
    assert world.submit(upload) is SubmitOutcome.REJECTED
    # Then nothing was asked of the provider, and the task is REJECTED with the reason, announced
    assert len(world.provider.submitted) == submitted
    task = world.store.get(_task_id_of(upload))
    assert task is not None and task.status is TaskStatus.REJECTED and task.error is not None
    assert task.error.code == "KEY_TOO_LONG"
    assert "shorten the key by" in task.error.message
    assert [t.task_id for t in world.notifications.sent[sent:]] == [task.task_id]
    assert_every_video_is_under_videos(world)


def _task_id_of(upload: Upload) -> str:
    from i2v.domain import derive_task_id

    return derive_task_id(upload.bucket, upload.key, upload.version)
