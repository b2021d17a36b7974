"""Hostile images through the real submit use case, on every route.

Each case is a file made here (by Pillow, or by hand where Pillow cannot make the shape)
with what the pipeline must say about it. Pillow is the reference decoder: the first test
checks, for every case, what Pillow's full `load()` does with it (its decompression-bomb
warning raised as an error), and that where the pipeline's verdict differs from Pillow's
the case says why. The second runs `submit_upload` for every case on every route against
in-process moto (S3, DynamoDB, SNS) with a provider double that records its calls: a case
with a defect, or one the route's rules refuse, ends REJECTED with its code and a
notification, and the provider is never called; any other is submitted once.

The route's rules are applied to the facts Pillow reads from the header (format, size),
so the expected verdict never comes from the parser under test.
"""

from __future__ import annotations

import io
import json
import random
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from i2v.domain import Options, TaskStatus
from i2v.errors import InvalidImage
from i2v.notify import SnsNotifier
from i2v.providers import ROUTES, route_entry
from i2v.providers.route import RouteSettings
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from i2v.usecases.submit import SubmitConfig, SubmitOutcome, Upload, submit_upload
from tests.support.aws import create_tasks_table, create_topic_tap, published
from tests.support.fakes import Clock, FakeProvider, FakeRouting, RecordingMetrics

CONFIG = SubmitConfig(
    defaults=Options(prompt="the horse gallops", resolution="720P", duration=5),
    incoming_prefix="incoming/",
    webhook_base_url="https://hooks.example.com/",
    presign_expiry_seconds=900,
)
SEED = 8


# --- the images ---------------------------------------------------------------------------


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Pseudo-random pixels: the file is as large as its dimensions allow."""
    rng = random.Random(SEED)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode)))


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


@cache
def png() -> bytes:
    return encode(noise((400, 300)), "PNG")


@cache
def jpeg() -> bytes:
    return encode(noise((400, 300)), "JPEG", quality=90)


@cache
def webp() -> bytes:
    return encode(noise((400, 300)), "WEBP", quality=80)


@cache
def bmp() -> bytes:
    return encode(noise((401, 300)), "BMP")


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", zlib.crc32(chunk_type + body))


def png_claiming(width: int, height: int, image_data: bytes) -> bytes:
    """A well-formed PNG (every CRC right) whose IHDR says `width` x `height` RGB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(image_data, 9))
        + png_chunk(b"IEND", b"")
    )


def png_inflating_past_its_rows() -> bytes:
    """400x300 px whose zlib stream holds 64 MiB more than its rows: ~1,000 times its size."""
    rows = b"".join(b"\x00" + bytes(range(256)) * 4 + bytes(176) for _ in range(300))
    compressor = zlib.compressobj(9)
    data = compressor.compress(rows)
    zeros = bytes(1024 * 1024)
    for _ in range(64):
        data += compressor.compress(zeros)
    data += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", 400, 300, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header is rewritten to `width` x `height`."""
    data = bytearray(jpeg())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def scan_start(data: bytes) -> int:
    """Where the first scan's entropy-coded data starts (after the SOS header)."""
    sos = data.find(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def with_metadata_over_the_head() -> bytes:
    """~200 KiB of EXIF and ICC before the frame header, the way cameras write it."""
    exif = Image.Exif()
    exif[0x010F] = "AdversarialCam"
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"c" * 60_000
    icc = random.Random(SEED).randbytes(140 * 1024)
    data = encode(noise((400, 300)), "JPEG", quality=90, exif=exif.tobytes(), icc_profile=icc)
    assert data.find(b"\xff\xc0") > 64 * 1024, "the frame header must lie past the first read"
    return data


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        archive.writestr("Payload.class", b"\xca\xfe\xba\xbe" + bytes(64))
    return out.getvalue()


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (400, 300), (shade, 40, 90)) for shade in (0, 120, 240)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x10meta" + bytes(200)


# --- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    code: str | None
    """The pipeline's verdict whatever the route: None when only the route's rules decide."""
    pillow_loads: bool
    """What Pillow's full load() does with it (checked, not assumed)."""
    why: str = ""
    """Why the pipeline refuses what Pillow loads, or takes what it refuses, when it does."""
    key: str = "photo.jpg"
    in_head: bool = False
    """The defect shows in the head, before the route's rules; else only the whole file shows it."""
    header_of: Callable[[], bytes] | None = None
    """For a file cut short, the whole file: where Pillow reads the header's facts from."""

    @property
    def data(self) -> bytes:
        return _data(self.name)


NO_ROUTE = "no route takes this format"
PIXELS = (
    "Pillow refuses over 2 x MAX_IMAGE_PIXELS and warns over it; the route's IMAGE_MAX_PIXELS refuses first"
)
CASES = [
    Case("zero-bytes", lambda: b"", "EMPTY_IMAGE", False, in_head=True),
    # PNG cut inside its header, just after it, in its image data, just before IEND
    Case("png-cut-in-header", lambda: png()[:20], "TRUNCATED_IMAGE", False, key="a.png", in_head=True),
    Case("png-cut-after-header", lambda: png()[:33], "TRUNCATED_IMAGE", False, key="a.png", header_of=png),
    Case(
        "png-cut-mid-data",
        lambda: png()[: len(png()) // 2],
        "TRUNCATED_IMAGE",
        False,
        key="a.png",
        header_of=png,
    ),
    Case(
        "png-cut-before-iend",
        lambda: png()[:-12],
        "TRUNCATED_IMAGE",
        True,
        why="libpng's png_read_end fails a PNG without IEND (Pillow and ffmpeg stop after the image data)",
        key="a.png",
        header_of=png,
    ),
    Case("jpeg-cut-in-header", lambda: jpeg()[:100], "TRUNCATED_IMAGE", False, in_head=True),
    Case(
        "jpeg-cut-after-header",
        lambda: jpeg()[: scan_start(jpeg())],
        "TRUNCATED_IMAGE",
        False,
        header_of=jpeg,
    ),
    Case("jpeg-cut-mid-scan", lambda: jpeg()[: len(jpeg()) // 2], "TRUNCATED_IMAGE", False, header_of=jpeg),
    Case("jpeg-cut-before-eoi", lambda: jpeg()[:-2], "TRUNCATED_IMAGE", False, header_of=jpeg),
    Case("webp-cut-in-header", lambda: webp()[:16], "TRUNCATED_IMAGE", False, key="a.webp", in_head=True),
    Case(
        "webp-cut-mid-frame",
        lambda: webp()[: len(webp()) // 2],
        "TRUNCATED_IMAGE",
        False,
        key="a.webp",
        header_of=webp,
    ),
    Case("webp-cut-before-end", lambda: webp()[:-1], "TRUNCATED_IMAGE", False, key="a.webp", header_of=webp),
    Case(
        "bmp-cut-mid-pixels",
        lambda: bmp()[: len(bmp()) // 2],
        "TRUNCATED_IMAGE",
        False,
        key="a.bmp",
        header_of=bmp,
    ),
    Case("png-1x1", lambda: encode(Image.new("RGB", (1, 1)), "PNG"), None, True, key="a.png"),
    Case("jpeg-1x1", lambda: encode(Image.new("RGB", (1, 1)), "JPEG"), None, True),
    # Headers that claim more pixels than any decoder opens, with almost no data
    Case("png-claims-100000x100000", lambda: png_claiming(100_000, 100_000, bytes(100)), None, False, PIXELS),
    Case("jpeg-claims-65535x65535", lambda: jpeg_claiming(65_535, 65_535), None, False, PIXELS),
    # Decompression bombs: small files whose pixels inflate to far more
    Case("png-bomb-100-mpx", lambda: encode(Image.new("L", (10_000, 10_000)), "PNG"), None, False, PIXELS),
    Case("png-bomb-81-mpx", lambda: encode(Image.new("L", (9_000, 9_000)), "PNG"), None, True),
    Case("png-stream-past-its-rows", png_inflating_past_its_rows, None, True),
    # Judged by content, not name
    Case("png-named-jpg", png, None, True, key="holiday.jpg"),
    Case("jpeg-named-png", jpeg, None, True, key="holiday.png"),
    # Polyglots: decoders stop at the end marker and ignore what follows
    Case("jpeg-plus-zip", lambda: jpeg() + zip_archive(), None, True),
    Case("jpeg-plus-html", lambda: jpeg() + b"<html><script>alert(1)</script></html>", None, True),
    Case("png-plus-zip", lambda: png() + zip_archive(), None, True, key="a.png"),
    Case(
        "gifar",
        lambda: encode(Image.new("RGB", (400, 300)), "GIF") + zip_archive(),
        "UNSUPPORTED_FORMAT",
        True,
        NO_ROUTE,
        key="a.gif",
        in_head=True,
    ),
    # Shapes a decoder must handle
    Case("jpeg-cmyk", lambda: encode(noise((400, 300), "CMYK"), "JPEG"), None, True),
    Case("jpeg-progressive", lambda: encode(noise((400, 300)), "JPEG", progressive=True), None, True),
    Case(
        "jpeg-restart-markers", lambda: encode(noise((400, 300)), "JPEG", restart_marker_rows=2), None, True
    ),
    Case("jpeg-exif-over-64-kib", with_metadata_over_the_head, None, True),
    Case("webp-lossless", lambda: encode(noise((400, 300)), "WEBP", lossless=True), None, True, key="a.webp"),
    Case("webp-alpha", lambda: encode(noise((400, 300), "RGBA"), "WEBP"), None, True, key="a.webp"),
    Case(
        "webp-animated",
        animated_webp,
        "ANIMATED_IMAGE",
        True,
        why="the pipeline animates a still image: which frame an animation's video starts from is unsaid",
        key="a.webp",
    ),
    Case("bmp", bmp, None, True, key="a.bmp"),
    # Formats no route takes
    Case(
        "gif",
        lambda: encode(noise((400, 300)), "GIF"),
        "UNSUPPORTED_FORMAT",
        True,
        NO_ROUTE,
        key="a.gif",
        in_head=True,
    ),
    Case(
        "tiff",
        lambda: encode(noise((400, 300)), "TIFF"),
        "UNSUPPORTED_FORMAT",
        True,
        NO_ROUTE,
        key="a.tif",
        in_head=True,
    ),
    Case("heic", lambda: HEIC, "UNSUPPORTED_FORMAT", False, key="a.heic", in_head=True),
    Case(
        "avif",
        lambda: encode(noise((400, 300)), "AVIF"),
        "UNSUPPORTED_FORMAT",
        True,
        NO_ROUTE,
        key="a.avif",
        in_head=True,
    ),
]
BY_NAME = {case.name: case for case in CASES}


@cache
def _data(name: str) -> bytes:
    return BY_NAME[name].make()


# --- the reference decoder ----------------------------------------------------------------


def pillow_loads(data: bytes) -> bool:
    """Pillow opens and decodes the whole file, bomb warnings raised as errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return False
    return True


@cache
def pillow_facts(name: str) -> tuple[str, int, int]:
    """Format and size as Pillow reads them from the header (no pixel limit: nothing decoded)."""
    case = BY_NAME[name]
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(case.header_of() if case.header_of else case.data)) as image:
            return str(image.format).lower(), image.width, image.height
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def route_verdict(case: Case, settings: RouteSettings) -> str | None:
    """The code the pipeline must give on this route: a defect in the head first, then the
    route's rules on the header's facts, then a defect only the whole file shows."""
    if case.in_head:
        return case.code
    image_format, width, height = pillow_facts(case.name)
    try:
        settings.check_image(image_format, width, height, len(case.data))
    except InvalidImage as refused:
        return refused.code
    return case.code


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_pillow_does_what_each_case_says(case: Case) -> None:
    # Given a hostile file
    # When Pillow opens and decodes it whole
    loads = pillow_loads(case.data)

    # Then it does what the case says, and a verdict other than Pillow's says why
    assert loads is case.pillow_loads
    if loads is not (case.code is None):
        assert case.why, f"{case.name}: the pipeline differs from Pillow without a reason"


# --- the submit use case on every route -----------------------------------------------------


@dataclass
class Stack:
    s3: Any
    sqs: Any
    store: TaskStore
    sources: SourceStore
    notifier: SnsNotifier
    tap_url: str
    bucket: str = "media"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One in-process moto for the module: each test has its own key, hence its own task."""
    with mock_aws():
        s3, sqs, sns = boto3.client("s3"), boto3.client("sqs"), boto3.client("sns")
        dynamodb = boto3.client("dynamodb")
        s3.create_bucket(Bucket="media")
        topic_arn, tap_url = create_topic_tap(sns, sqs)
        yield Stack(
            s3=s3,
            sqs=sqs,
            store=TaskStore(dynamodb, create_tasks_table(dynamodb), retention_days=30),
            sources=SourceStore(s3, bucket="media", incoming_prefix="incoming/"),
            notifier=SnsNotifier(sns, topic_arn),
            tap_url=tap_url,
        )


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_route_judges_every_hostile_image(stack: Stack, case: Case, route: str) -> None:
    # Given the hostile file uploaded for this route, its rules the route's own defaults
    settings = route_entry(route).load_settings({})
    provider = FakeProvider(name=route, supports_webhooks=route_entry(route).webhooks)
    key = f"incoming/{route}/{case.name}/{case.key}"
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=case.data)
    clock = Clock()
    metrics = RecordingMetrics()
    upload = Upload(stack.bucket, key, len(case.data), None, f"seq-{route}-{case.name}", "e", None)

    # When the submit use case takes it
    outcome = submit_upload(
        upload,
        owner="msg-1",
        config=CONFIG,
        store=stack.store,
        sources=stack.sources,
        routing=FakeRouting({route: provider}, settings={route: settings}),
        endings=Endings(store=stack.store, notify=stack.notifier.publish, metrics=metrics, clock=clock),
        metrics=metrics,
        clock=clock,
    )

    # Then it is refused with the code that applies, published, and never sent; or sent once
    expected = route_verdict(case, settings)
    messages = [json.loads(envelope["Message"]) for envelope in published(stack.sqs, stack.tap_url)]
    if expected is None:
        assert outcome is SubmitOutcome.SUBMITTED, messages
        assert len(provider.submitted) == 1
        assert messages == []
        return
    assert outcome is SubmitOutcome.REJECTED
    assert provider.submitted == []
    [message] = messages
    assert message["status"] == TaskStatus.REJECTED.value
    assert message["source"]["key"] == key
    assert message["error"]["code"] == expected, message["error"]
    assert message["error"]["message"]
    stored = stack.store.get(message["task_id"])
    assert stored is not None and stored.status is TaskStatus.REJECTED
    assert stored.error is not None and stored.error.code == expected
