"""Image validation from the head of the file, checked against what Pillow itself writes."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from i2v.errors import InvalidImage
from i2v.media.image import (
    HEAD_BYTES,
    INFLATE_PIECE_BYTES,
    MAX_HEAD_BYTES,
    READ_CHUNK_BYTES,
    ImageInfo,
    NeedMoreBytes,
    inspect_image,
    read_image_info,
    verify_image,
)
from i2v.providers.magnific import MagnificSettings

# The rules are each route's settings; Magnific's are the strictest published.
RULES = MagnificSettings()
MAX_FILE_BYTES = RULES.image_max_bytes


def check_provider_rules(info: ImageInfo, size: int) -> None:
    RULES.check_image(info.format, info.width, info.height, size)


def encode(image_format: str, size: tuple[int, int], mode: str = "RGB", **save_options: Any) -> bytes:
    image = Image.new(mode, size, color=(10, 120, 200, 255)[: len(mode)] if mode != "L" else 90)
    output = io.BytesIO()
    image.save(output, format=image_format, **save_options)
    return output.getvalue()


def noise_jpeg(size: tuple[int, int], quality: int = 95) -> bytes:
    """A JPEG that stays big: random pixels do not compress."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    output = io.BytesIO()
    image.save(output, format="JPEG", quality=quality)
    return output.getvalue()


def with_app_segments(jpeg: bytes, total_bytes: int, marker: int = 0xED) -> bytes:
    """The JPEG with APPn segments of `total_bytes` in all inserted right after SOI."""
    segments = b""
    while total_bytes > 0:
        payload = min(total_bytes, 65_000)
        segments += bytes([0xFF, marker]) + struct.pack(">H", payload + 2) + b"\x00" * payload
        total_bytes -= payload
    return jpeg[:2] + segments + jpeg[2:]


def pillow_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


class CountingReader:
    """An in-memory stand-in for an S3 ranged GET that counts what it hands out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bytes_read = 0
        self.calls = 0

    def __call__(self, start: int, end_inclusive: int) -> bytes:
        chunk = self.data[start : end_inclusive + 1]
        self.bytes_read += len(chunk)
        self.calls += 1
        return chunk


def error_code(excinfo: pytest.ExceptionInfo[InvalidImage]) -> str:
    return excinfo.value.code


def translucent_webp(size: tuple[int, int]) -> bytes:
    """A lossy WEBP with real transparency, which Pillow writes as VP8X + ALPH + VP8."""
    image = Image.new("RGBA", size, (10, 120, 200, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    output = io.BytesIO()
    image.save(output, format="WEBP", quality=80)
    return output.getvalue()


def animated_webp(size: tuple[int, int]) -> bytes:
    frames = [Image.new("RGB", size, (shade, 0, 0)) for shade in (0, 120, 240)]
    output = io.BytesIO()
    frames[0].save(output, format="WEBP", save_all=True, append_images=frames[1:], duration=100)
    return output.getvalue()


# --- real files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected_format", "expected_chunk"),
    [
        pytest.param(encode("JPEG", (640, 480)), "jpeg", None, id="jpeg-baseline"),
        pytest.param(encode("JPEG", (1203, 517), progressive=True), "jpeg", None, id="jpeg-progressive"),
        pytest.param(encode("JPEG", (333, 777), mode="L"), "jpeg", None, id="jpeg-grey"),
        pytest.param(encode("PNG", (800, 321)), "png", None, id="png"),
        pytest.param(encode("PNG", (301, 640), mode="RGBA"), "png", None, id="png-alpha"),
        pytest.param(encode("BMP", (640, 480)), "bmp", None, id="bmp"),
        pytest.param(encode("BMP", (401, 303), mode="L"), "bmp", None, id="bmp-grey"),
        pytest.param(encode("WEBP", (641, 479), quality=80), "webp", b"VP8 ", id="webp-lossy"),
        pytest.param(encode("WEBP", (1001, 999), lossless=True), "webp", b"VP8L", id="webp-lossless"),
        pytest.param(translucent_webp((513, 1025)), "webp", b"VP8X", id="webp-alpha"),
        pytest.param(animated_webp((777, 333)), "webp", b"VP8X", id="webp-animated"),
    ],
)
def test_inspect_image_reads_the_size_pillow_wrote(
    data: bytes, expected_format: str, expected_chunk: bytes | None
) -> None:
    # Given a real file as Pillow writes it
    if expected_chunk is not None:
        assert data[12:16] == expected_chunk, "the fixture must exercise this WEBP chunk"

    # When only its head is inspected
    info = inspect_image(data[:HEAD_BYTES])

    # Then format and size are what Pillow reads from the whole file
    assert info.format == expected_format
    assert (info.width, info.height) == pillow_size(data)


def test_read_image_info_reads_only_the_head_of_a_big_image() -> None:
    # Given a JPEG of well over a megabyte
    data = noise_jpeg((1600, 1200))
    assert len(data) > 8 * HEAD_BYTES
    reader = CountingReader(data)

    # When its info is read
    info = read_image_info(reader, len(data))

    # Then one ranged read of the head sufficed
    assert info == ImageInfo(format="jpeg", width=1600, height=1200)
    assert (reader.calls, reader.bytes_read) == (1, HEAD_BYTES)


def test_read_image_info_reads_further_when_metadata_pushes_the_frame_header_out() -> None:
    # Given a big JPEG whose frame header lies after ~100 KiB of APP segments
    data = with_app_segments(noise_jpeg((1024, 768)), 100 * 1024)
    assert pillow_size(data) == (1024, 768)
    assert len(data) > 4 * HEAD_BYTES
    reader = CountingReader(data)

    # When its info is read
    info = read_image_info(reader, len(data))

    # Then the head grew past the metadata, and no further than twice the first read
    assert (info.width, info.height) == (1024, 768)
    assert HEAD_BYTES < reader.bytes_read <= 2 * HEAD_BYTES


def test_read_image_info_gives_up_when_metadata_exceeds_the_head_cap() -> None:
    # Given a JPEG with more metadata before its frame header than the cap allows
    data = with_app_segments(encode("JPEG", (640, 480)), MAX_HEAD_BYTES + 1000)
    reader = CountingReader(data)

    # When its info is read
    with pytest.raises(InvalidImage) as excinfo:
        read_image_info(reader, len(data))

    # Then it is refused without reading past the cap
    assert error_code(excinfo) == "IMAGE_HEADER_TOO_LARGE"
    assert reader.bytes_read <= MAX_HEAD_BYTES


def test_read_image_info_reads_a_small_file_once_and_whole() -> None:
    # Given a file smaller than the head size
    data = encode("PNG", (400, 400))
    reader = CountingReader(data)

    # When its info is read
    info = read_image_info(reader, len(data))

    # Then one read of exactly its size sufficed
    assert info == ImageInfo(format="png", width=400, height=400)
    assert (reader.calls, reader.bytes_read) == (1, len(data))


def test_read_image_info_of_an_empty_file_reads_nothing() -> None:
    # Given a zero-byte upload
    reader = CountingReader(b"")

    # When its info is read
    with pytest.raises(InvalidImage) as excinfo:
        read_image_info(reader, 0)

    # Then it is refused as empty without any read
    assert error_code(excinfo) == "EMPTY_IMAGE"
    assert "empty" in excinfo.value.message
    assert reader.calls == 0


@pytest.mark.parametrize("cut", [2, 11, 20, 100], ids=lambda cut: f"{cut}-bytes")
def test_read_image_info_of_a_jpeg_cut_inside_its_header_is_truncated(cut: int) -> None:
    # Given a JPEG whose file ends inside its header (DQT segments come before SOF)
    data = encode("JPEG", (640, 480))[:cut]

    # When its info is read
    with pytest.raises(InvalidImage) as excinfo:
        read_image_info(CountingReader(data), len(data))

    # Then it is cut short, not a format question
    assert error_code(excinfo) == "TRUNCATED_IMAGE"


def test_read_image_info_when_the_object_is_shorter_than_stated() -> None:
    # Given a reader whose object ends before the size it was said to have
    data = with_app_segments(encode("JPEG", (640, 480)), 100 * 1024)
    reader = CountingReader(data[:HEAD_BYTES])

    # When its info is read
    with pytest.raises(InvalidImage) as excinfo:
        read_image_info(reader, len(data))

    # Then it is corrupt rather than a loop
    assert error_code(excinfo) == "CORRUPT_IMAGE"


# --- provider rules on real files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected_code"),
    [
        ((300, 300), None),
        ((299, 300), "IMAGE_TOO_SMALL"),
        ((300, 299), "IMAGE_TOO_SMALL"),
        ((750, 300), None),
        ((300, 750), None),
        ((753, 300), "BAD_ASPECT_RATIO"),
        ((300, 753), "BAD_ASPECT_RATIO"),
    ],
    ids=lambda value: "x".join(map(str, value)) if isinstance(value, tuple) else str(value),
)
def test_provider_rules_at_the_boundaries(size: tuple[int, int], expected_code: str | None) -> None:
    # Given a real PNG of that size
    data = encode("PNG", size)
    info = read_image_info(CountingReader(data), len(data))

    # When the provider's rules are checked
    if expected_code is None:
        check_provider_rules(info, len(data))
        return
    with pytest.raises(InvalidImage) as excinfo:
        check_provider_rules(info, len(data))

    # Then the refusal names the rule and the numbers
    assert error_code(excinfo) == expected_code
    assert f"{size[0]}x{size[1]} px" in excinfo.value.message


def test_too_small_message_says_what_is_needed() -> None:
    # Given a 200x800 image
    info = ImageInfo(format="png", width=200, height=800)

    # When the rules are checked
    with pytest.raises(InvalidImage) as excinfo:
        check_provider_rules(info, 1000)

    # Then the message gives both sizes and the minimum
    assert excinfo.value.message == "image is 200x800 px; each side must be at least 300 px"


def test_bad_ratio_message_gives_the_ratio() -> None:
    # Given an image 2.51 times as wide as high
    info = ImageInfo(format="jpeg", width=753, height=300)

    # When the rules are checked
    with pytest.raises(InvalidImage) as excinfo:
        check_provider_rules(info, 1000)

    # Then the message gives the ratio and the allowed range
    assert "2.51:1" in excinfo.value.message
    assert "at most 2.5:1 either way" in excinfo.value.message


@pytest.mark.parametrize(
    ("size", "expected_code"),
    [(MAX_FILE_BYTES, None), (MAX_FILE_BYTES + 1, "IMAGE_TOO_LARGE")],
    ids=["exactly-10-MiB", "one-byte-more"],
)
def test_file_size_limit(size: int, expected_code: str | None) -> None:
    # Given a valid image of that many bytes
    info = ImageInfo(format="jpeg", width=1920, height=1080)

    # When the rules are checked
    if expected_code is None:
        check_provider_rules(info, size)
        return
    with pytest.raises(InvalidImage) as excinfo:
        check_provider_rules(info, size)

    # Then the refusal gives the size and the limit
    assert error_code(excinfo) == expected_code
    assert str(size) in excinfo.value.message
    assert str(MAX_FILE_BYTES) in excinfo.value.message


# --- formats that are not accepted ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        pytest.param(encode("GIF", (400, 400)), "detected GIF", id="gif"),
        pytest.param(encode("TIFF", (400, 400)), "detected TIFF", id="tiff"),
        pytest.param(encode("PDF", (400, 400)), "detected PDF", id="pdf"),
        pytest.param(encode("AVIF", (400, 400)), "detected AVIF", id="avif"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "detected HEIC/HEIF", id="heic"),
        pytest.param(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "ISO media", id="mp4"),
        pytest.param(
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "detected SVG",
            id="svg",
        ),
        pytest.param(b"<!DOCTYPE html><html><body>hi</body></html>", "detected HTML", id="html"),
        pytest.param("a photo of my cat, caf\u00e9\n".encode(), "plain text", id="text"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", "RIFF 'WAVE'", id="wav"),
        pytest.param(bytes(range(200, 256)) * 4, "not recognised", id="binary"),
    ],
)
def test_unsupported_formats_are_named(data: bytes, detected: str) -> None:
    # Given a file that is not JPEG, PNG, BMP or WEBP
    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(data)

    # Then the refusal says what it is and what to use instead
    assert error_code(excinfo) == "UNSUPPORTED_FORMAT"
    assert detected in excinfo.value.message
    assert excinfo.value.message.endswith("use JPEG, PNG, BMP or WEBP")


def test_gif_message_in_full() -> None:
    # Given a GIF
    data = encode("GIF", (400, 400))

    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(data)

    # Then the message is the one a user reads
    assert excinfo.value.message == ("not a supported image: detected GIF; use JPEG, PNG, BMP or WEBP")


def test_format_comes_from_the_bytes_not_the_name() -> None:
    # Given a PNG's bytes and a JPEG's bytes, whatever their files were called
    png, jpeg = encode("PNG", (400, 300)), encode("JPEG", (400, 300))

    # When they are inspected
    # Then each is what its bytes say
    assert inspect_image(png).format == "png"
    assert inspect_image(jpeg).format == "jpeg"


# --- headers built by hand: the parsers' corners --------------------------------------------


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def sof_payload(width: int, height: int) -> bytes:
    return bytes([8]) + struct.pack(">HH", height, width) + b"\x03\x01\x22\x00"


@pytest.mark.parametrize("marker", [0xC4, 0xC8, 0xCC], ids=["DHT", "JPG", "DAC"])
def test_jpeg_segments_in_the_sof_range_that_are_not_frames_are_skipped(marker: int) -> None:
    # Given a JPEG head where a DHT/JPG/DAC segment, shaped like a frame header, comes first
    head = (
        b"\xff\xd8"
        + jpeg_segment(marker, sof_payload(width=1, height=1))
        + jpeg_segment(0xC2, sof_payload(width=640, height=480))
    )

    # When it is inspected
    info = inspect_image(head)

    # Then the size comes from the real frame header
    assert (info.width, info.height) == (640, 480)


@pytest.mark.parametrize("sof_marker", [0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCF])
def test_every_jpeg_frame_type_gives_the_size(sof_marker: int) -> None:
    # Given a JPEG head with that frame header
    head = (
        b"\xff\xd8"
        + jpeg_segment(0xE0, b"JFIF\x00")
        + jpeg_segment(sof_marker, sof_payload(width=1234, height=567))
    )

    # When it is inspected
    info = inspect_image(head)

    # Then the size is read height first, big-endian
    assert (info.width, info.height) == (1234, 567)


def test_jpeg_fill_bytes_and_standalone_markers_are_skipped() -> None:
    # Given a JPEG head with 0xFF fill bytes before markers and TEM/RST markers between segments
    head = (
        b"\xff\xd8"
        + b"\xff\xff\xff"
        + jpeg_segment(0xE1, b"Exif\x00\x00" + b"\x00" * 50)
        + b"\xff\x01"
        + b"\xff\xd3"
        + b"\xff\xff"
        + jpeg_segment(0xC0, sof_payload(width=800, height=600))
    )

    # When it is inspected
    info = inspect_image(head)

    # Then the frame header is found
    assert (info.width, info.height) == (800, 600)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 7 + b"garbage", id="no-marker"),
        pytest.param(b"\xff\xd8" + jpeg_segment(0xDB, b"\x00" * 65) + b"\xff\xda\x00\x08", id="sos-first"),
        pytest.param(b"\xff\xd8\xff\xd9", id="eoi-first"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x01", id="bad-length"),
        pytest.param(b"\xff\xd8" + jpeg_segment(0xC0, sof_payload(width=0, height=480)), id="zero-width"),
    ],
)
def test_malformed_jpeg_headers_are_corrupt(head: bytes) -> None:
    # Given a JPEG head that breaks the marker structure
    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(head)

    # Then it is corrupt
    assert error_code(excinfo) == "CORRUPT_IMAGE"


def test_a_short_head_asks_for_more_bytes() -> None:
    # Given the first bytes of a JPEG whose first segment runs past them
    head = b"\xff\xd8" + jpeg_segment(0xE1, b"\x00" * 5000)[:100]

    # When it is inspected
    with pytest.raises(NeedMoreBytes) as excinfo:
        inspect_image(head)

    # Then it asks for the byte after that segment, and is itself an InvalidImage
    assert excinfo.value.needed == len(b"\xff\xd8") + len(jpeg_segment(0xE1, b"\x00" * 5000)) + 1
    assert isinstance(excinfo.value, InvalidImage)


def test_png_must_start_with_ihdr() -> None:
    # Given a PNG whose first chunk is not IHDR
    png = encode("PNG", (400, 400))
    broken = png[:12] + b"gAMA" + png[16:]

    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(broken)

    # Then it is corrupt
    assert error_code(excinfo) == "CORRUPT_IMAGE"


def test_png_cut_inside_ihdr_needs_more_bytes() -> None:
    # Given the first 20 bytes of a PNG
    head = encode("PNG", (400, 400))[:20]

    # When it is inspected
    with pytest.raises(NeedMoreBytes) as excinfo:
        inspect_image(head)

    # Then the IHDR end is what is needed
    assert excinfo.value.needed == 24


def test_top_down_bmp_has_a_positive_height() -> None:
    # Given a BMP marked top-down (negative height)
    bmp = bytearray(encode("BMP", (500, 400)))
    bmp[22:26] = struct.pack("<i", -400)

    # When it is inspected
    info = inspect_image(bytes(bmp))

    # Then the height is its absolute value
    assert (info.width, info.height) == (500, 400)


def test_os2_core_header_bmp() -> None:
    # Given a BMP with a 12-byte BITMAPCOREHEADER (16-bit width and height)
    head = b"BM" + b"\x00" * 12 + struct.pack("<IHHHH", 12, 640, 360, 1, 24)

    # When it is inspected
    info = inspect_image(head)

    # Then the 16-bit fields are read
    assert (info.format, info.width, info.height) == ("bmp", 640, 360)


def test_bmp_with_an_unknown_header_size_is_corrupt() -> None:
    # Given "BM" followed by a DIB header size no BMP uses
    head = b"BM" + b"\x00" * 12 + struct.pack("<I", 20) + b"\x00" * 20

    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(head)

    # Then it is corrupt
    assert error_code(excinfo) == "CORRUPT_IMAGE"


def test_webp_lossy_scale_bits_are_masked() -> None:
    # Given a lossy WEBP whose width and height fields carry upscaling bits
    webp = bytearray(encode("WEBP", (641, 479), quality=80))
    webp[26:28] = struct.pack("<H", 641 | 0x8000)
    webp[28:30] = struct.pack("<H", 479 | 0x4000)

    # When it is inspected
    info = inspect_image(bytes(webp))

    # Then the scale bits do not leak into the size
    assert (info.width, info.height) == (641, 479)


@pytest.mark.parametrize(
    ("offset", "replacement"),
    [(23, b"\x00\x00\x00"), (12, b"ALPH")],
    ids=["vp8-without-start-code", "unknown-first-chunk"],
)
def test_malformed_webp_is_corrupt(offset: int, replacement: bytes) -> None:
    # Given a lossy WEBP with a broken frame
    webp = bytearray(encode("WEBP", (641, 479), quality=80))
    webp[offset : offset + len(replacement)] = replacement

    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(bytes(webp))

    # Then it is corrupt
    assert error_code(excinfo) == "CORRUPT_IMAGE"


def test_webp_lossless_without_signature_is_corrupt() -> None:
    # Given a lossless WEBP whose signature byte is wrong
    webp = bytearray(encode("WEBP", (400, 400), lossless=True))
    webp[20] = 0x00

    # When it is inspected
    with pytest.raises(InvalidImage) as excinfo:
        inspect_image(bytes(webp))

    # Then it is corrupt
    assert error_code(excinfo) == "CORRUPT_IMAGE"


# --- the whole file: verify_image -------------------------------------------------------------


def verify(data: bytes, reader: CountingReader | None = None) -> None:
    reader = reader or CountingReader(data)
    verify_image(reader, len(data), read_image_info(reader, len(data)))


def verify_code(data: bytes) -> str:
    with pytest.raises(InvalidImage) as excinfo:
        verify(data)
    return error_code(excinfo)


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", zlib.crc32(chunk_type + body))


def png_of_rows(width: int, height: int, rows: bytes, *, between: bytes = b"", extra: bytes = b"") -> bytes:
    """An 8-bit greyscale PNG with these raw (filtered) rows, `between` split into two IDATs."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(rows)
    idats = (
        png_chunk(b"IDAT", data)
        if not between
        else png_chunk(b"IDAT", data[:10]) + between + png_chunk(b"IDAT", data[10:])
    )
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idats + extra + png_chunk(b"IEND", b"")


def pillow_loads(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(noise_jpeg((640, 480)), id="jpeg"),
        pytest.param(encode("JPEG", (641, 479), progressive=True), id="jpeg-progressive"),
        pytest.param(encode("JPEG", (640, 480), mode="CMYK"), id="jpeg-cmyk"),
        pytest.param(encode("JPEG", (640, 480), restart_marker_blocks=3), id="jpeg-restart-markers"),
        pytest.param(with_app_segments(encode("JPEG", (640, 480)), 300 * 1024), id="jpeg-300-kib-metadata"),
        pytest.param(encode("PNG", (800, 321)), id="png"),
        pytest.param(encode("PNG", (333, 301), mode="L", bits=4), id="png-4-bit"),
        pytest.param(encode("PNG", (301, 640), mode="RGBA"), id="png-alpha"),
        pytest.param(encode("PNG", (400, 300), mode="P"), id="png-palette"),
        pytest.param(encode("BMP", (641, 480)), id="bmp"),
        pytest.param(encode("BMP", (401, 303), mode="L"), id="bmp-grey"),
        pytest.param(encode("WEBP", (641, 479), quality=80), id="webp-lossy"),
        pytest.param(encode("WEBP", (1001, 999), lossless=True), id="webp-lossless"),
        pytest.param(translucent_webp((513, 1025)), id="webp-alpha"),
    ],
)
def test_whole_files_pillow_writes_are_read_to_their_end(data: bytes) -> None:
    # Given a file as Pillow writes it, which Pillow itself loads
    assert pillow_loads(data)

    # When it is walked whole, Then nothing is refused
    verify(data)


def interlaced_png(rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", 10, 9, 8, 0, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def test_an_interlaced_png_is_inflated_pass_by_pass() -> None:
    # Given a 10x9 px Adam7 PNG built by hand: each pass's rows, with filter type 0
    passes = [(2, 2), (2, 1), (1, 3), (3, 2), (2, 5), (5, 5), (4, 10)]  # (rows, width) of passes 1..7
    rows = b"".join((b"\x00" + bytes(width)) * count for count, width in passes)
    assert pillow_loads(interlaced_png(rows))

    # When it is walked, Then it is whole; a byte fewer and it is not, for Pillow either
    verify(interlaced_png(rows))
    assert not pillow_loads(interlaced_png(rows[:-1]))
    assert verify_code(interlaced_png(rows[:-1])) == "CORRUPT_IMAGE"


@pytest.mark.parametrize(
    ("data", "code", "pillow"),
    [
        pytest.param(
            png_of_rows(4, 2, b"\x00abcd\x07efgh"), "CORRUPT_IMAGE", False, id="unknown-filter-type"
        ),
        pytest.param(png_of_rows(4, 2, b"\x00abcd\x00efg"), "CORRUPT_IMAGE", False, id="rows-short"),
        pytest.param(png_of_rows(4, 2, b"\x00abcd\x00efgh" + bytes(10**6)), None, True, id="rows-long"),
        pytest.param(
            png_of_rows(4, 2, b"\x00abcd\x00efgh", between=png_chunk(b"tEXt", b"a\x00b")),
            "CORRUPT_IMAGE",
            None,
            id="idat-not-consecutive",
        ),
    ],
)
def test_png_image_data_must_inflate_to_exactly_its_rows(
    data: bytes, code: str | None, pillow: bool | None
) -> None:
    # Given a PNG whose IDAT stream is what the case says
    if pillow is not None:
        assert pillow_loads(data) is pillow

    # When it is walked, Then it is refused with the code, or taken
    if code is None:
        verify(data)
    else:
        assert verify_code(data) == code


def test_a_png_chunk_with_a_wrong_crc_is_corrupt_even_where_pillow_does_not_look() -> None:
    # Given a PNG whose IDAT CRC is wrong: Pillow skips IDAT CRCs, libpng does not
    data = bytearray(encode("PNG", (400, 300)))
    idat = data.find(b"IDAT")
    end = idat + 4 + int.from_bytes(data[idat - 4 : idat], "big")
    data[end] ^= 0xFF
    assert pillow_loads(bytes(data))

    # When it is walked
    with pytest.raises(InvalidImage) as excinfo:
        verify(bytes(data))

    # Then the chunk is named
    assert error_code(excinfo) == "CORRUPT_IMAGE"
    assert "the CRC of the PNG's IDAT chunk at byte" in excinfo.value.message


def test_an_apng_is_refused_as_animated() -> None:
    # Given a PNG with three frames (APNG)
    frames = [Image.new("RGB", (400, 300), (shade, 0, 0)) for shade in (0, 100, 200)]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])

    # When it is walked, Then it is refused as animated
    assert verify_code(out.getvalue()) == "ANIMATED_IMAGE"


def test_a_decompression_bomb_is_walked_in_bounded_memory() -> None:
    # Given a 9000x9000 px PNG of 80 KiB that inflates to 81 MB
    data = encode("PNG", (9000, 9000), mode="L")
    assert len(data) < 200 * 1024

    # When it is walked under tracemalloc
    tracemalloc.start()
    try:
        verify(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then it is whole, and no more than a read chunk and an inflated piece were held
    assert peak < READ_CHUNK_BYTES + 2 * INFLATE_PIECE_BYTES + 256 * 1024, peak


def test_a_big_file_is_read_in_chunks_of_bounded_size() -> None:
    # Given a JPEG of several MiB
    data = noise_jpeg((2400, 1800))
    assert len(data) > 3 * READ_CHUNK_BYTES
    reader = CountingReader(data)

    # When it is walked whole
    verify(data, reader)

    # Then every byte after the start marker was read once (beside the head), a chunk at a time
    assert reader.bytes_read == HEAD_BYTES + len(data) - 2
    assert reader.calls == 1 + -(-(len(data) - 2) // READ_CHUNK_BYTES)


def test_a_webp_walk_skips_the_frame_data_it_does_not_check() -> None:
    # Given a lossless WEBP of over a MiB: its frame data is libwebp's to decode
    data = encode("WEBP", (1024, 768), lossless=True)
    reader = CountingReader(data)

    # When it is walked
    verify(data, reader)

    # Then only the head and the chunk headers were read
    assert reader.bytes_read <= HEAD_BYTES + READ_CHUNK_BYTES


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(lambda d: d.replace(b"\xff\xdb", b"\xff\xfe", 2), "quantization table", id="no-dqt"),
        pytest.param(lambda d: d[: d.find(b"\xff\xda")] + b"\xff\xd9", "no scan", id="no-scan"),
        pytest.param(lambda d: d[:-2] + b"\xff\xd8", "out of place", id="soi-at-the-end"),
    ],
)
def test_malformed_jpeg_bodies_are_corrupt(mutate: Callable[[bytes], bytes], reason: str) -> None:
    # Given a JPEG broken after its frame header
    data = mutate(encode("JPEG", (640, 480)))
    assert not pillow_loads(data)

    # When it is walked
    with pytest.raises(InvalidImage) as excinfo:
        verify(data)

    # Then it is refused, and says what is wrong
    assert error_code(excinfo) in {"CORRUPT_IMAGE", "TRUNCATED_IMAGE"}
    assert reason in excinfo.value.message


def test_a_webp_frame_that_disagrees_with_its_canvas_is_corrupt() -> None:
    # Given a WEBP with alpha (VP8X) whose canvas says one width and its frame another
    data = bytearray(translucent_webp((513, 1025)))
    data[24:27] = (600 - 1).to_bytes(3, "little")
    assert not pillow_loads(bytes(data))

    # When it is walked, Then the two sizes are named
    with pytest.raises(InvalidImage) as excinfo:
        verify(bytes(data))
    assert "513x1025 px inside a 600x1025 px canvas" in excinfo.value.message


def test_a_bmp_needs_every_row_but_the_last_ones_padding() -> None:
    # Given a 641 px wide 24-bit BMP: 1,923 bytes a row, padded to 1,924
    data = encode("BMP", (641, 480))

    # When its last padding byte is missing it is whole, as Pillow finds; one more and it is not
    assert pillow_loads(data[:-1]) and not pillow_loads(data[:-2])
    verify(data[:-1])
    assert verify_code(data[:-2]) == "TRUNCATED_IMAGE"


def test_an_object_shorter_than_its_stated_size_is_corrupt_not_a_loop() -> None:
    # Given a reader whose object ends before the size HEAD gave
    data = noise_jpeg((1600, 1200))
    info = read_image_info(CountingReader(data), len(data))

    # When it is walked
    with pytest.raises(InvalidImage) as excinfo:
        verify_image(CountingReader(data[: len(data) // 2]), len(data), info)

    # Then it is corrupt, naming the byte
    assert error_code(excinfo) == "CORRUPT_IMAGE"
    assert f"before its stated size of {len(data)}" in excinfo.value.message


@pytest.mark.parametrize(
    ("size", "expected_code"),
    [
        ((9459, 9459), None),
        ((9460, 9460), "IMAGE_TOO_MANY_PIXELS"),
        ((100_000, 100_000), "IMAGE_TOO_MANY_PIXELS"),
    ],
)
def test_pixels_over_pillows_bomb_limit_are_refused(size: tuple[int, int], expected_code: str | None) -> None:
    # Given an image of that many pixels, around Pillow's MAX_IMAGE_PIXELS
    info = ImageInfo(format="png", width=size[0], height=size[1])
    assert RULES.image_max_pixels == Image.MAX_IMAGE_PIXELS

    # When the rules are checked
    if expected_code is None:
        check_provider_rules(info, 1000)
        return
    with pytest.raises(InvalidImage) as excinfo:
        check_provider_rules(info, 1000)

    # Then the refusal gives the pixels and the limit
    assert error_code(excinfo) == expected_code
    assert f"at most {Image.MAX_IMAGE_PIXELS} px" in excinfo.value.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">II", 400, 300)) + png_chunk(b"IEND", b""),
            id="png-ihdr-short",
        ),
        pytest.param(
            png_of_rows(4, 2, b"\x00abcd\x00efgh", extra=png_chunk(b"acTL", bytes(4096))),
            id="png-actl-long",
        ),
        pytest.param(
            translucent_webp((400, 400))[:16] + bytes(4) + translucent_webp((400, 400))[20:],
            id="webp-vp8x-claims-0-bytes",
        ),
    ],
)
def test_chunks_of_the_wrong_fixed_length_are_corrupt_not_a_crash(data: bytes) -> None:
    # Given a chunk whose length its type fixes, claiming another
    # When it is walked, Then it is refused as corrupt
    assert verify_code(data) == "CORRUPT_IMAGE"


SMALL_FILES = [
    encode("PNG", (64, 48)),
    encode("PNG", (64, 48), mode="P"),
    encode("JPEG", (64, 48)),
    encode("JPEG", (64, 48), progressive=True),
    encode("WEBP", (64, 48), quality=80),
    encode("WEBP", (64, 48), lossless=True),
    translucent_webp((64, 48)),
    encode("BMP", (64, 48)),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    original=st.sampled_from(SMALL_FILES),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.booleans()), min_size=1, max_size=6
    ),
    cut=st.integers(0, 10_000) | st.none(),
)
def test_any_damaged_file_is_judged_never_a_crash(
    original: bytes, edits: list[tuple[int, int, bool]], cut: int | None
) -> None:
    # Given a real small file with bytes changed or inserted, and perhaps cut short
    data = bytearray(original)
    for where, value, insert in edits:
        position = where % (len(data) + 1)
        if insert:
            data[position:position] = bytes([value])
        elif position < len(data):
            data[position] = value
    damaged = bytes(data[: cut % (len(data) + 1)] if cut is not None else data)
    reader = CountingReader(damaged)

    # When it is read and walked
    try:
        verify_image(reader, len(damaged), read_image_info(reader, len(damaged)))
    except InvalidImage as refused:
        # Then a refusal is an InvalidImage with a code and a reason, and nothing else escapes
        assert refused.code and refused.message
    assert reader.bytes_read <= 2 * len(damaged) + HEAD_BYTES
