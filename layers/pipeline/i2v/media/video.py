"""Stream a finished video from an untrusted URL into S3.

The step that joins the two halves: `i2v.media.fetch` downloads the URL under a
DownloadPolicy (SSRF guards, deadline, size cap, content type and MP4 signature, SHA-256
on the fly) and `i2v.media.sink` writes what it yields to S3, parts uploading while the
next ones are read. Memory holds a few parts whatever the size of the video.

Failures raise DownloadFailed; nothing is left in the bucket (no object, no pending
multipart upload) unless the whole video arrived. The names callers import from here
(DownloadPolicy, is_forbidden_address, host_is_allowed, ...) stay importable from here.
"""

from __future__ import annotations

import ssl
from typing import Any

from i2v.domain import Frozen
from i2v.media.fetch import (
    VIDEO_CONTENT_TYPE,
    DownloadPolicy,
    host_is_allowed,
    is_forbidden_address,
    open_video,
)
from i2v.media.sink import DEFAULT_MAX_IN_FLIGHT, DEFAULT_PART_SIZE, MIN_PART_SIZE, store_stream

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_PART_SIZE",
    "MIN_PART_SIZE",
    "VIDEO_CONTENT_TYPE",
    "DownloadPolicy",
    "StoredVideo",
    "host_is_allowed",
    "is_forbidden_address",
    "stream_video_to_s3",
]


class StoredVideo(Frozen):
    size: int
    sha256: str
    content_type: str


def stream_video_to_s3(
    url: str,
    *,
    policy: DownloadPolicy,
    s3: Any,
    bucket: str,
    key: str,
    metadata: dict[str, str],
    part_size: int = DEFAULT_PART_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> StoredVideo:
    """Download `url` under `policy` into s3://bucket/key as video/mp4 with `metadata`.

    Up to `max_in_flight` parts of `part_size` bytes upload while the next is read.
    Raises DownloadFailed; nothing is left in the bucket (no object, no pending
    multipart upload) unless the whole video arrived.
    """
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
    with open_video(url, policy, ssl_context=ssl_context) as body:
        store_stream(
            body,
            s3=s3,
            bucket=bucket,
            key=key,
            content_type=VIDEO_CONTENT_TYPE,
            metadata=metadata,
            part_size=part_size,
            max_in_flight=max_in_flight,
            expected_size=body.declared_size,
        )
        return StoredVideo(size=body.size, sha256=body.sha256, content_type=VIDEO_CONTENT_TYPE)
