"""The uploaded objects in S3, as the submit step needs them."""

from __future__ import annotations

import posixpath
from typing import Any

from i2v.domain import Frozen
from i2v.errors import InvalidInput, InvalidOptions
from i2v.options import MAX_SIDECAR_BYTES


class SourceMissing(InvalidInput):
    code = "SOURCE_MISSING"


class ObjectHead(Frozen):
    size: int
    content_type: str | None
    metadata: dict[str, str]
    version_id: str | None


class SourceStore:
    def __init__(self, s3_client: Any, *, bucket: str, incoming_prefix: str) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._prefix = incoming_prefix

    def _version(self, version_id: str | None) -> dict[str, str]:
        return {"VersionId": version_id} if version_id else {}

    def head(self, key: str, version_id: str | None = None) -> ObjectHead:
        try:
            response = self._s3.head_object(Bucket=self._bucket, Key=key, **self._version(version_id))
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise SourceMissing(f"s3://{self._bucket}/{key} no longer exists") from exc
            raise
        return ObjectHead(
            size=response["ContentLength"],
            content_type=response.get("ContentType"),
            metadata=response.get("Metadata", {}),
            version_id=response.get("VersionId"),
        )

    def read_range(self, key: str, start: int, end: int, version_id: str | None = None) -> bytes:
        """Bytes start..end (inclusive) of an object: a ranged GET, never the whole image."""
        response = self._s3.get_object(
            Bucket=self._bucket, Key=key, Range=f"bytes={start}-{end}", **self._version(version_id)
        )
        body: bytes = response["Body"].read()
        return body

    def read_sidecar(self, key: str) -> bytes:
        if not key.startswith(self._prefix):
            raise InvalidOptions(f"options sidecar {key!r} must be under {self._prefix!r}")
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key, Range=f"bytes=0-{MAX_SIDECAR_BYTES}")
        except self._s3.exceptions.NoSuchKey as exc:
            raise InvalidOptions(
                f"options sidecar s3://{self._bucket}/{key} not found; upload it before the image"
            ) from exc
        body: bytes = response["Body"].read()
        return body

    def presign(self, key: str, *, expires_in: int, version_id: str | None = None) -> str:
        url: str = self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key, **self._version(version_id)},
            ExpiresIn=expires_in,
        )
        return url


def video_key_of(source_key: str, task_id: str, *, incoming_prefix: str, videos_prefix: str) -> str:
    """`videos/<the source's path under incoming/, without extension>/<task id>.mp4`:
    grouped by source, and never overwriting another task's video.

    The path keeps only its named segments: empty, `.` and `..` ones are dropped and a
    backslash separates like a slash, so no tool that maps keys onto folders (a sync to
    Windows, say) can place a video outside `videos/`.
    """
    relative = source_key.removeprefix(incoming_prefix)
    stem = posixpath.splitext(relative)[0].replace("\\", "/")
    segments = [segment for segment in stem.split("/") if segment not in ("", ".", "..")]
    return f"{videos_prefix}{'/'.join(segments) or 'video'}/{task_id}.mp4"
