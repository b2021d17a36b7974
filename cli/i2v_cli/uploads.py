"""Submit: images uploaded under incoming/ with the metadata keys the pipeline reads
(i2v/options.py), then, if asked, their tasks followed to their end."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from i2v_cli.aws import Aws, aws_errors
from i2v_cli.errors import CliError, NotFound
from i2v_cli.stack import INCOMING_PREFIX
from i2v_cli.tasks import tasks_of_key

if TYPE_CHECKING:
    from i2v.domain import Task

# What a folder contributes (the routes' formats, docs/providers.md); a file named on the
# command line goes up whatever its name: the pipeline decides from its bytes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
WAIT_POLL_SECONDS = 2.0
# Kept as they are in percent-encoding (S3 metadata is ASCII): a prompt stays readable.
_PROMPT_SAFE = " ,.;:!?'()-_/"


@dataclass
class Upload:
    path: Path
    key: str
    size: int
    uploaded_at: float = 0.0
    """The object's Last-Modified (S3's clock): its task was received after it."""
    task: Task | None = field(default=None)

    def to_dict(self, bucket: str) -> dict[str, Any]:
        task = self.task
        return {
            "file": str(self.path),
            "bucket": bucket,
            "key": self.key,
            "size": self.size,
            "task_id": task.task_id if task else None,
            "status": task.status.value if task else None,
            "video_key": task.video.key if task and task.video else None,
            "error": task.error.model_dump() if task and task.error else None,
        }


def metadata(
    *,
    prompt: str | None,
    resolution: str | None,
    duration: int | None,
    model: str | None,
    provider: str | None,
    seed: int | None,
) -> dict[str, str]:
    """The options as S3 user metadata; anything left out takes the stack's defaults."""
    found = {
        "prompt": quote(prompt, safe=_PROMPT_SAFE) if prompt is not None else None,
        "resolution": resolution,
        "duration": str(duration) if duration is not None else None,
        "model": model,
        "provider": provider,
        "seed": str(seed) if seed is not None else None,
    }
    return {name: value for name, value in found.items() if value is not None}


def plan(paths: list[Path], key_prefix: str = "") -> list[Upload]:
    """Each file's key under incoming/: a file by its name, a folder's images by their path in it."""
    uploads: list[Upload] = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise NotFound(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
            uploads += [_upload(p, key_prefix + p.relative_to(path).as_posix()) for p in images]
        elif path.is_file():
            uploads.append(_upload(path, key_prefix + path.name))
        else:
            raise NotFound(f"no such file or folder: {path}")
    keys = [u.key for u in uploads]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise CliError(f"two files would go to the same key: {duplicates}")
    return uploads


def _upload(path: Path, relative_key: str) -> Upload:
    return Upload(path=path, key=INCOMING_PREFIX + relative_key, size=path.stat().st_size)


def upload(aws: Aws, item: Upload, meta: Mapping[str, str], sent: Callable[[int], object]) -> None:
    """One file up (the SDK's managed transfer: multipart when large), `sent` told of each chunk."""
    extra: dict[str, Any] = {"Metadata": dict(meta)}
    content_type = mimetypes.guess_type(item.path.name)[0]
    if content_type:
        extra["ContentType"] = content_type
    with aws_errors():
        aws.s3.upload_file(str(item.path), aws.stack.bucket, item.key, ExtraArgs=extra, Callback=sent)
        head = aws.s3.head_object(Bucket=aws.stack.bucket, Key=item.key)
    item.uploaded_at = head["LastModified"].timestamp()


def wait(
    aws: Aws,
    uploads: list[Upload],
    *,
    timeout: float,
    changed: Callable[[Upload], object],
    poll_seconds: float = WAIT_POLL_SECONDS,
) -> list[Upload]:
    """Until every upload's task has ended; the ones still open when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    pending = list(uploads)
    while pending:
        for item in list(pending):
            # Last-Modified has whole seconds, rounded down: never after the task's receipt.
            found = tasks_of_key(aws, item.key, since=item.uploaded_at)
            latest = found[-1] if found else None
            if latest is not None and (item.task is None or latest.status != item.task.status):
                item.task = latest
                changed(item)
            if latest is not None and latest.status.is_terminal:
                pending.remove(item)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    return pending
