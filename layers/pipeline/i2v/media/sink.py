"""Write a stream of chunks to one S3 object, uploading parts while the next are read.

A stream shorter than two parts goes up in a single PUT: the first full part is held
until a second one fills. Anything longer becomes a multipart upload with a CRC32
checksum per part: while the caller's iterator fills the next part, up to
`max_in_flight` full parts upload on their own threads. (One request instead of four
for a typical short video: against moto, 44 ms for a 10 MiB PUT and 78 ms as two parts,
created and completed; on S3, a quarter of the request charges.) Memory holds at most
`max_in_flight + 1` part-sized buffers, allocated as needed and reused, whatever the size
of the stream, and kept for the process's next stream (_SpareBuffers); when every buffer
is taken, reading waits for an upload to finish, so a slow store slows the download down
instead of piling up parts.

Nothing is left in the bucket (no object, no pending multipart upload) unless the whole
stream arrived: on any failure (the iterator raising, say for a size cap, or a part upload
failing) reading stops at the next chunk, the parts not yet started are dropped, those
under way are waited for, and the multipart upload is aborted. Storage errors raise
DownloadFailed with code VIDEO_STORE_FAILED (transient); the iterator's own errors pass
through unchanged.

Why not boto3's transfer manager (`upload_fileobj` over a file-like reader)? Measured side
by side (bench/video_stream.py, contender "tm"), it was as fast and held about 18 MiB more
at the same concurrency; this pool also keeps the buffers, the stop on failure and the
abort in our hands.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from i2v.errors import DownloadFailed

DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
# 4 parts in flight and one filling: 40 MiB of buffers with 8 MiB parts. Against moto on
# loopback, 4 beat 2 and 3, and 8 bought no more (bench/video_stream.py).
DEFAULT_MAX_IN_FLIGHT = 4


class _SpareBuffers:
    """Part buffers kept for the next stream of this process (a warm Lambda streams video
    after video). Allocating fresh ones each time let the process's high-water mark climb:
    glibc serves an 8 MiB allocation from mmap at first, raises its mmap threshold when one
    is freed, and then serves the next ones from the heap, where they stay resident (about
    +40 MiB after the second 100 MiB stream, bench/video_stream.py)."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._spare: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        with self._lock:
            spare = self._spare.get(size)
            if spare:
                return spare.pop()
        return bytearray(size)

    def give_back(self, buffers: Iterable[bytearray], size: int) -> None:
        with self._lock:
            spare = self._spare.setdefault(size, [])
            for buffer in buffers:
                if len(buffer) == size and len(spare) < self._keep:
                    spare.append(buffer)


_SPARE_BUFFERS = _SpareBuffers(keep=DEFAULT_MAX_IN_FLIGHT + 1)


def store_stream(
    chunks: Iterable[bytes],
    *,
    s3: Any,
    bucket: str,
    key: str,
    content_type: str,
    metadata: dict[str, str],
    part_size: int = DEFAULT_PART_SIZE,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    expected_size: int | None = None,
) -> int:
    """Store the concatenated `chunks` as s3://bucket/key; the number of bytes stored.

    `expected_size` (a declared length, untrusted) of two parts or more starts the
    multipart upload at once, created while the first part is read and each part sent as it
    fills, instead of holding the first part to see whether a single PUT will do; a stream
    that turns out shorter still stores whole.
    """
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    upload = _MultipartUpload(s3, bucket=bucket, key=key, content_type=content_type, metadata=metadata)
    with _PartUploads(upload, part_size, max_in_flight) as parts:
        if expected_size is not None and expected_size >= 2 * part_size:
            parts.start()
        size = 0
        part = parts.take_buffer()
        filled = 0
        for chunk in chunks:
            parts.raise_if_failed()
            size += len(chunk)
            remaining = memoryview(chunk)
            while remaining:
                taken = min(len(remaining), part_size - filled)
                part[filled : filled + taken] = remaining[:taken]
                filled += taken
                remaining = remaining[taken:]
                if filled == part_size:
                    parts.submit(part)
                    part = parts.take_buffer()
                    filled = 0
        parts.finish(part, filled)
    return size


def stored_object(
    *, s3: Any, bucket: str, key: str, metadata: dict[str, str], chunk_size: int = 1024 * 1024
) -> tuple[int, str, str] | None:
    """(size, sha256, content type) of the object at `key` if it is there and carries
    `metadata` (the task it was stored for), read back in chunks to hash it; else None.

    For a try that finds the work of an earlier one: an object in S3 is whole or absent,
    so one that exists was stored completely. Without s3:ListBucket, S3 answers a missing
    key with 403 rather than 404: both mean nothing is there for us.
    """
    with _storage_errors_as_download_failed():
        try:
            found = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied", "403"):
                return None
            raise
        body = found["Body"]
        try:
            stored_for = found.get("Metadata") or {}
            if any(stored_for.get(name) != value for name, value in metadata.items()):
                return None
            digest = hashlib.sha256()
            size = 0
            for chunk in body.iter_chunks(chunk_size):
                digest.update(chunk)
                size += len(chunk)
        finally:
            body.close()
    return size, digest.hexdigest(), str(found.get("ContentType") or "")


class _PartUploads:
    """The parts of one object: numbered in the order they are submitted, uploaded by a
    small pool of threads, their buffers handed back for reuse once sent."""

    def __init__(self, upload: _MultipartUpload, part_size: int, max_in_flight: int) -> None:
        self._upload = upload
        self._part_size = part_size
        self._max_buffers = max_in_flight + 1  # the uploads under way and the one filling
        self._max_in_flight = max_in_flight
        self._executor: ThreadPoolExecutor | None = None
        self._created: Future[None] | None = None
        self._changed = threading.Condition()
        self._free: list[bytearray] = []
        self._held: bytearray | None = None  # the first full part, until a second one fills
        self._allocated = 0
        self._pending: list[Future[dict[str, Any]]] = []
        self._failure: BaseException | None = None

    def __enter__(self) -> _PartUploads:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        try:
            if error is None:
                return
            # Stop what has not started, let what is under way end, then abort: a part that
            # lands after the abort would otherwise linger (and bill).
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._upload.abort()
        finally:
            with self._changed:  # every upload has ended: the buffers they handed back are free
                _SPARE_BUFFERS.give_back(self._free, self._part_size)
                self._free = []

    def take_buffer(self) -> bytearray:
        """A part-sized buffer: a free one, a new one while under the bound, or the next
        one an upload hands back. Raises the failure of any part upload."""
        with self._changed:
            while True:
                self.raise_if_failed()
                if self._free:
                    return self._free.pop()
                if self._allocated < self._max_buffers:
                    self._allocated += 1
                    return _SPARE_BUFFERS.take(self._part_size)
                self._changed.wait()

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def submit(self, part: bytearray) -> None:
        """Upload a full part, numbered after the ones before it, on a pool thread; the
        first one waits for a second, in case the whole stream fits one PUT."""
        if self._executor is None and self._held is None:
            self._held = part
            return
        if self._held is not None:
            held, self._held = self._held, None
            self._submit(held)
        self._submit(part)

    def start(self) -> None:
        """Create the multipart upload on the pool, first in its queue, while parts are read."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="s3-part")
            self._created = self._executor.submit(self._upload.start)

    def _submit(self, part: bytes | bytearray) -> None:
        self.start()
        assert self._executor is not None
        number = len(self._pending) + 1
        future = self._executor.submit(self._upload_part, number, part)
        future.add_done_callback(lambda done: self._part_done(done, part))
        self._pending.append(future)

    def finish(self, buffer: bytearray, filled: int) -> None:
        """Upload the last part (the first `filled` bytes of `buffer`), wait for every part,
        complete the object (or PUT it whole if it is shorter than two parts)."""
        last_part = bytes(memoryview(buffer)[:filled])  # a copy: the buffer stays whole, for reuse
        self._free.append(buffer)
        if self._executor is None:
            if self._held is not None:  # under two parts in all
                last_part = b"".join((self._held, last_part))
                self._free.append(self._held)
                self._held = None
            self._upload.put(last_part)
            return
        if last_part:
            self._submit(last_part)
        if not self._pending:  # started early for a declared length, and no byte came
            self._executor.shutdown(wait=True)
            assert self._created is not None
            self._created.result()
            self._upload.abort()
            self._upload.put(last_part)
            return
        with self._changed:
            while not all(future.done() for future in self._pending):
                self.raise_if_failed()
                self._changed.wait()
            self.raise_if_failed()
        self._executor.shutdown(wait=True)
        self._upload.complete([future.result() for future in self._pending])

    def _upload_part(self, number: int, part: bytes | bytearray) -> dict[str, Any]:
        assert self._created is not None
        self._created.result()  # raises the creation's failure for every part
        return self._upload.upload_part(number, part)

    def _part_done(self, done: Future[dict[str, Any]], part: bytes | bytearray) -> None:
        with self._changed:
            if done.cancelled():
                pass
            elif (failure := done.exception()) is not None:
                if self._failure is None:
                    self._failure = failure
            elif isinstance(part, bytearray):  # a whole buffer (a last part is a copy)
                self._free.append(part)
            self._changed.notify_all()


class _MultipartUpload:
    """The S3 calls for one object; every storage error becomes DownloadFailed."""

    def __init__(
        self, s3: Any, *, bucket: str, key: str, content_type: str, metadata: dict[str, str]
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._metadata = metadata
        self._upload_id: str | None = None

    def start(self) -> None:
        with _storage_errors_as_download_failed():
            created = self._s3.create_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                ContentType=self._content_type,
                Metadata=self._metadata,
                ChecksumAlgorithm="CRC32",
            )
        self._upload_id = created["UploadId"]

    def upload_part(self, number: int, data: bytes | bytearray) -> dict[str, Any]:
        with _storage_errors_as_download_failed():
            uploaded = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="CRC32",
            )
        return {"PartNumber": number, "ETag": uploaded["ETag"], "ChecksumCRC32": uploaded["ChecksumCRC32"]}

    def complete(self, parts: list[dict[str, Any]]) -> None:
        with _storage_errors_as_download_failed():
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": sorted(parts, key=lambda part: part["PartNumber"])},
            )
        self._upload_id = None

    def put(self, body: bytes | bytearray) -> None:
        with _storage_errors_as_download_failed():
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=body,
                ContentType=self._content_type,
                Metadata=self._metadata,
            )

    def abort(self) -> None:
        """Abort a started multipart upload, so no parts linger (and bill)."""
        if self._upload_id is None:
            return
        # The original failure matters more than a failed clean-up; the bucket's
        # lifecycle rule for incomplete multipart uploads is the backstop.
        with contextlib.suppress(BotoCoreError, ClientError):
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        self._upload_id = None


@contextlib.contextmanager
def _storage_errors_as_download_failed() -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise DownloadFailed(
            f"storing the video in S3 failed: {error}", permanent=False, code="VIDEO_STORE_FAILED"
        ) from error
