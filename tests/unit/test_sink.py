"""Writing a stream to S3 with parts uploading concurrently: moto's S3 in process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from i2v.errors import DownloadFailed
from i2v.media.sink import store_stream

BUCKET = "videos-bucket"
KEY = "videos/task-1.mp4"
METADATA = {"task-id": "task-1"}
MiB = 1024 * 1024
PART_SIZE = 5 * MiB


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


class WatchedS3:
    """moto's client, with each upload_part delayed or failed on demand and watched:
    how many run at once, which buffers they were given, what had been read by then."""

    def __init__(self, s3: Any, *, before_part: Callable[[int], None] = lambda number: None) -> None:
        self._s3 = s3
        self._before_part = before_part
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.started_parts: list[int] = []
        self.buffer_ids: set[int] = set()
        self.buffers: list[bytearray] = []
        self.aborted = False
        self.finished = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def upload_part(self, **kwargs: Any) -> Any:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.started_parts.append(kwargs["PartNumber"])
            if isinstance(kwargs["Body"], bytearray):  # a part buffer (the last part is a copy)
                self.buffer_ids.add(id(kwargs["Body"]))
                self.buffers.append(kwargs["Body"])  # kept alive: no later buffer can take its id
        try:
            self._before_part(kwargs["PartNumber"])
            uploaded = self._s3.upload_part(**kwargs)
            with self._lock:
                self.finished += 1
            return uploaded
        finally:
            with self._lock:
                self.running -= 1

    def abort_multipart_upload(self, **kwargs: Any) -> Any:
        self.aborted = True
        return self._s3.abort_multipart_upload(**kwargs)


class Body:
    """A body handed out in uneven chunks, counting how much of it has been read."""

    def __init__(self, size: int, chunk_size: int = 333 * 1024) -> None:
        self.data = os.urandom(size)
        self.chunk_size = chunk_size
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.chunk_size):
            chunk = self.data[start : start + self.chunk_size]
            self.read += len(chunk)
            yield chunk


def store(chunks: Any, s3: Any, max_in_flight: int = 3, expected_size: int | None = None) -> int:
    return store_stream(
        chunks,
        s3=s3,
        bucket=BUCKET,
        key=KEY,
        content_type="video/mp4",
        metadata=METADATA,
        part_size=PART_SIZE,
        max_in_flight=max_in_flight,
        expected_size=expected_size,
    )


def assert_nothing_stored(s3: Any) -> None:
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def store_failure() -> ClientError:
    return ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "UploadPart")


# --- success -------------------------------------------------------------------------------


def test_parts_finishing_out_of_order_are_assembled_in_order(s3: Any) -> None:
    # Given 23 MiB (five parts) and uploads where each earlier part takes longer than the next
    body = Body(23 * MiB)
    watched = WatchedS3(s3, before_part=lambda number: time.sleep(0.05 * (6 - number)))

    # When it is stored with three parts in flight
    size = store(body, watched, max_in_flight=3)

    # Then the object is the body, byte for byte, from five parts, typed and described
    assert size == len(body.data)
    stored = s3.get_object(Bucket=BUCKET, Key=KEY, ChecksumMode="ENABLED")
    assert stored["Body"].read() == body.data
    assert stored["ETag"].endswith('-5"')
    assert stored["ContentType"] == "video/mp4"
    assert stored["Metadata"] == METADATA
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # and parts were uploading side by side, in buffers that were reused
    assert watched.most_running == 3
    assert sorted(watched.started_parts) == [1, 2, 3, 4, 5]
    assert len(watched.buffer_ids) <= 4


def test_reading_goes_on_while_parts_upload_but_no_further_than_the_buffers(s3: Any) -> None:
    # Given uploads that each take a while, and a body of eight parts
    body = Body(8 * PART_SIZE)
    ahead: list[int] = []  # bytes read beyond the parts already stored, seen by each upload

    def slow(number: int) -> None:
        ahead.append(body.read - watched.finished * PART_SIZE)
        time.sleep(0.3)
        ahead.append(body.read - watched.finished * PART_SIZE)

    watched = WatchedS3(s3, before_part=slow)

    # When it is stored with two parts in flight
    store(body, watched, max_in_flight=2)

    # Then while parts uploaded, reading went on into the next parts, but never past the
    # two buffers in flight and the one filling
    assert max(ahead) > 2 * PART_SIZE
    assert max(ahead) <= 3 * PART_SIZE + body.chunk_size
    assert watched.most_running == 2
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == body.data


def test_a_stream_shorter_than_a_part_is_one_put(s3: Any) -> None:
    # Given 1 MiB
    body = Body(MiB)
    watched = WatchedS3(s3)

    # When it is stored
    size = store(body, watched)

    # Then it went up whole, without a multipart upload
    assert size == MiB
    assert watched.started_parts == []
    stored = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored["Body"].read() == body.data
    assert "-" not in stored["ETag"]
    assert stored["ContentType"] == "video/mp4"


def test_a_stream_shorter_than_two_parts_is_one_put(s3: Any) -> None:
    # Given one part and a half
    body = Body(PART_SIZE + PART_SIZE // 2, chunk_size=MiB)
    watched = WatchedS3(s3)

    # When it is stored
    size = store(body, watched)

    # Then it went up whole, in one request, without a multipart upload
    assert size == len(body.data)
    assert watched.started_parts == []
    stored = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored["Body"].read() == body.data
    assert "-" not in stored["ETag"]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_declared_length_of_two_parts_sends_the_first_part_as_soon_as_it_fills(s3: Any) -> None:
    # Given a body of three parts whose length was declared, which pauses once the first
    # part is full (and a little more) until that part's upload begins
    data = os.urandom(3 * PART_SIZE)
    first_part_started = threading.Event()
    waited: list[bool] = []

    def chunks() -> Iterator[bytes]:
        yield data[: PART_SIZE + MiB]
        waited.append(first_part_started.wait(timeout=5))
        yield data[PART_SIZE + MiB :]

    watched = WatchedS3(s3, before_part=lambda number: number == 1 and first_part_started.set())

    # When it is stored with that length as the hint
    size = store(chunks(), watched, expected_size=len(data))

    # Then part 1 went up before the second part had filled (without the hint it waits for
    # it, in case one PUT will do), and the object is the body, in three parts
    assert waited == [True]
    assert size == len(data)
    stored = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored["Body"].read() == data
    assert stored["ETag"].endswith('-3"')


def test_a_declared_length_that_overstates_the_body_still_stores_it_whole(s3: Any) -> None:
    # Given a body of one part and a half that declared ten parts
    body = Body(PART_SIZE + PART_SIZE // 2, chunk_size=MiB)

    # When it is stored with the false hint
    size = store(body, s3, expected_size=10 * PART_SIZE)

    # Then the object is the body, from the parts that came, and nothing is left pending
    assert size == len(body.data)
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == body.data
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_declared_length_and_no_bytes_at_all_stores_an_empty_object(s3: Any) -> None:
    # Given an empty stream that declared two parts
    watched = WatchedS3(s3)

    # When it is stored
    size = store(iter(()), watched, expected_size=2 * PART_SIZE)

    # Then the early multipart upload was aborted and the (empty) object put whole
    assert size == 0
    assert watched.aborted
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b""
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_declared_length_under_two_parts_keeps_the_single_put(s3: Any) -> None:
    # Given one part and a half, declared as such
    body = Body(PART_SIZE + PART_SIZE // 2, chunk_size=MiB)
    watched = WatchedS3(s3)

    # When it is stored
    store(body, watched, expected_size=len(body.data))

    # Then it is one PUT, as without the hint
    assert watched.started_parts == []
    assert "-" not in s3.get_object(Bucket=BUCKET, Key=KEY)["ETag"]


def test_an_exact_multiple_of_the_part_size_has_no_empty_last_part(s3: Any) -> None:
    # Given exactly two parts
    body = Body(2 * PART_SIZE, chunk_size=MiB)

    # When it is stored
    store(body, s3)

    # Then the object has two parts
    stored = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored["ETag"].endswith('-2"')
    assert stored["Body"].read() == body.data


# --- failures -----------------------------------------------------------------------------


def test_a_part_failing_while_others_are_in_flight_aborts_and_stops_reading(s3: Any) -> None:
    # Given a 60 MiB body where part 2 fails at once while parts 1 and 3 are still uploading
    body = Body(60 * MiB)

    def part_2_fails(number: int) -> None:
        if number == 2:
            raise store_failure()
        time.sleep(0.3)

    watched = WatchedS3(s3, before_part=part_2_fails)

    # When it is stored with three parts in flight
    with pytest.raises(DownloadFailed) as excinfo:
        store(body, watched, max_in_flight=3)

    # Then the failure is transient, the upload aborted, nothing left, and reading stopped
    # within the buffers (far short of the body)
    assert (excinfo.value.code, excinfo.value.permanent) == ("VIDEO_STORE_FAILED", False)
    assert watched.aborted
    assert_nothing_stored(s3)
    assert body.read <= 5 * PART_SIZE
    assert 2 in watched.started_parts


def test_the_body_failing_mid_stream_aborts_with_parts_in_flight(s3: Any) -> None:
    # Given a body that fails (as the size cap does) after three parts, uploads being slow
    def over_the_cap() -> Iterator[bytes]:
        for _ in range(3 * 5):
            yield os.urandom(MiB)
        raise DownloadFailed("over the cap", permanent=True, code="VIDEO_TOO_LARGE")

    watched = WatchedS3(s3, before_part=lambda number: time.sleep(0.2))

    # When it is stored
    with pytest.raises(DownloadFailed) as excinfo:
        store(over_the_cap(), watched, max_in_flight=2)

    # Then the body's own error comes through, and nothing is left once the parts under way ended
    assert (excinfo.value.code, excinfo.value.permanent) == ("VIDEO_TOO_LARGE", True)
    assert watched.aborted
    assert watched.running == 0
    assert_nothing_stored(s3)


def test_a_failing_completion_aborts(s3: Any) -> None:
    # Given a store whose completion fails
    class FailingCompletion(WatchedS3):
        def complete_multipart_upload(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "Complete")

    watched = FailingCompletion(s3)

    # When two parts are stored
    with pytest.raises(DownloadFailed) as excinfo:
        store(Body(2 * PART_SIZE), watched)

    # Then the upload is aborted and nothing is left
    assert excinfo.value.code == "VIDEO_STORE_FAILED"
    assert watched.aborted
    assert_nothing_stored(s3)


def test_a_failing_single_put_is_a_store_failure(s3: Any) -> None:
    # Given a bucket that does not exist
    # When a short stream is stored there
    with pytest.raises(DownloadFailed) as excinfo:
        store_stream(
            [b"small"],
            s3=s3,
            bucket="no-such-bucket",
            key=KEY,
            content_type="video/mp4",
            metadata={},
            part_size=PART_SIZE,
        )

    # Then the failure is transient
    assert (excinfo.value.code, excinfo.value.permanent) == ("VIDEO_STORE_FAILED", False)


@pytest.mark.parametrize(("part_size", "max_in_flight"), [(PART_SIZE - 1, 2), (PART_SIZE, 0)])
def test_bad_settings_are_refused(s3: Any, part_size: int, max_in_flight: int) -> None:
    with pytest.raises(ValueError, match=r"part_size|max_in_flight"):
        store_stream(
            [b"x"],
            s3=s3,
            bucket=BUCKET,
            key=KEY,
            content_type="video/mp4",
            metadata={},
            part_size=part_size,
            max_in_flight=max_in_flight,
        )


def test_a_failing_creation_fails_every_part_and_leaves_nothing(s3: Any) -> None:
    # Given a store that cannot start a multipart upload
    class FailingCreation(WatchedS3):
        def create_multipart_upload(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateMultipartUpload")

    watched = FailingCreation(s3)
    body = Body(30 * MiB)

    # When a stream of several parts is stored
    with pytest.raises(DownloadFailed) as excinfo:
        store(body, watched)

    # Then it is a store failure, no part was sent, reading stopped, and nothing is left
    assert (excinfo.value.code, excinfo.value.permanent) == ("VIDEO_STORE_FAILED", False)
    assert watched.started_parts == []
    assert body.read < len(body.data)
    assert_nothing_stored(s3)


def test_stored_object_reads_back_a_whole_object_stored_for_the_same_task(s3: Any) -> None:
    # Given a video stored in two parts for task t-1
    import hashlib

    from i2v.media.sink import stored_object

    data = os.urandom(PART_SIZE + 123)
    metadata = {"task-id": "t-1", "source-key": "incoming/a.png"}
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    store_stream(
        chunks,
        s3=s3,
        bucket=BUCKET,
        key="videos/a/t-1.mp4",
        content_type="video/mp4",
        metadata=metadata,
        part_size=PART_SIZE,
    )
    # When it is looked for with its task's metadata, Then its size, hash and type come back
    found = stored_object(s3=s3, bucket=BUCKET, key="videos/a/t-1.mp4", metadata=metadata, chunk_size=70000)
    assert found == (len(data), hashlib.sha256(data).hexdigest(), "video/mp4")
    # and not for another task's metadata, nor at a key where nothing is
    assert stored_object(s3=s3, bucket=BUCKET, key="videos/a/t-1.mp4", metadata={"task-id": "t-2"}) is None
    assert stored_object(s3=s3, bucket=BUCKET, key="videos/a/none.mp4", metadata=metadata) is None


def test_stored_object_turns_a_storage_error_into_a_transient_failure(s3: Any) -> None:
    from i2v.media.sink import stored_object

    # Given a bucket that does not exist (any error but "not there")
    with pytest.raises(DownloadFailed) as failed:
        stored_object(s3=s3, bucket="no-such-bucket", key="videos/a/t-1.mp4", metadata={"task-id": "t-1"})
    assert failed.value.code == "VIDEO_STORE_FAILED" and not failed.value.permanent


def test_a_second_stream_in_the_same_process_reuses_the_first_ones_buffers(s3: Any) -> None:
    # Given a first stream of four parts stored, its part buffers noted
    first = WatchedS3(s3)
    store(Body(4 * PART_SIZE, chunk_size=MiB), first, max_in_flight=2)

    # When a second one is stored, as a warm Lambda does
    second = WatchedS3(s3)
    body = Body(4 * PART_SIZE, chunk_size=MiB)
    store(body, second, max_in_flight=2)

    # Then its parts went up from the same buffers (none newly allocated), and it is whole
    assert second.buffer_ids <= first.buffer_ids
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == body.data
