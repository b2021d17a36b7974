"""Image validation: how much of an upload i2v.media.image.read_image_info reads, and how fast.

The images are made here with Pillow (Pillow is a dev dependency only: the Lambda package
has no imaging library). `read_range(start, end)` serves slices of the file from memory
and counts each call (in the function, each call is one ranged S3 GET) and the bytes it
returns. Parse time is measured over that in-memory reader, so it is the cost of the
parsing and the slicing alone, without the S3 round trips the counts stand for.

A JPEG segment holds at most 64 KiB, so "~200 KiB of EXIF" is made the way cameras and
editors make it: one full EXIF (APP1) segment plus an ICC profile that Pillow splits over
several APP2 segments, all before the frame header. A last JPEG carries ~1.1 MiB of
metadata, over the reader's 1 MiB cap, to show the worst case is still bounded.

Run: .venv/bin/python bench/image_head.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import random
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from measure import MIB, Summary, load, machine
from PIL import Image

from i2v.errors import InvalidImage
from i2v.media.image import MAX_HEAD_BYTES, read_image_info
from i2v.providers.magnific import MagnificSettings

RULES = MagnificSettings()

SEED = 2026
KIB = 1024


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes


@dataclass
class CountingReader:
    data: bytes
    calls: int = 0
    bytes_read: int = 0

    def __call__(self, start: int, end: int) -> bytes:
        piece = self.data[start : end + 1]
        self.calls += 1
        self.bytes_read += len(piece)
        return piece


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Pseudo-random pixels: incompressible, so the files are as large as their dimensions allow."""
    channels = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(SEED).randbytes(width * height * channels))


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def exif_with_comment(comment_bytes: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    # UserComment in the EXIF sub-IFD: the bulk of a full APP1 segment.
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"c" * comment_bytes
    return exif.tobytes()


def jpeg_metadata_bytes(data: bytes) -> int:
    """Where the frame header (SOF) starts: everything before it is metadata to skip."""
    position = 2
    while data[position] == 0xFF and not 0xC0 <= data[position + 1] <= 0xC3:
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return position


def cases() -> list[Case]:
    photo = noise(3400, 2260)
    small = noise(1280, 720)
    return [
        Case("JPEG 3400x2260, 9.0 MB", encoded(photo, "JPEG", quality=95)),
        Case("PNG 1600x1200", encoded(noise(1600, 1200), "PNG")),
        Case("WEBP lossy 1920x1080", encoded(noise(1920, 1080), "WEBP", quality=80)),
        Case("WEBP lossless 1024x768", encoded(noise(1024, 768), "WEBP", lossless=True)),
        Case(
            "WEBP extended (alpha) 1024x768",
            encoded(noise(1024, 768, "RGBA"), "WEBP", quality=80),
        ),
        Case("BMP 1024x768", encoded(noise(1024, 768), "BMP")),
        Case(
            "JPEG 1280x720, ~200 KiB EXIF+ICC",
            encoded(
                small,
                "JPEG",
                quality=90,
                exif=exif_with_comment(60 * KIB),
                icc_profile=random.Random(SEED).randbytes(140 * KIB),
            ),
        ),
        Case(
            "JPEG 1280x720, ~1.1 MiB ICC (over cap)",
            encoded(small, "JPEG", quality=90, icc_profile=random.Random(SEED).randbytes(1100 * KIB)),
        ),
    ]


def verdict(data: bytes, reader: Callable[[int, int], bytes]) -> str:
    try:
        info = read_image_info(reader, len(data))
        RULES.check_image(info.format, info.width, info.height, len(data))
    except InvalidImage as refused:
        return f"refused: {refused.code}"
    return f"{info.format} {info.width}x{info.height} ok"


def parse_microseconds(data: bytes, repeats: int) -> Summary:
    def parse() -> object:
        try:
            return read_image_info(CountingReader(data), len(data))
        except InvalidImage as refused:
            return refused

    timer = timeit.Timer(parse)
    loops, _ = timer.autorange()  # enough calls for ~0.2 s per repeat
    return Summary.of([seconds / loops * 1e6 for seconds in timer.repeat(repeat=repeats, number=loops)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(machine())
    print(f"head cap MAX_HEAD_BYTES = {MAX_HEAD_BYTES // KIB} KiB")
    print(f"\n== read_image_info; parse us per call: median [min-max] over {args.repeats} repeats ==")
    print(
        f"{'image':<40} {'file':>10} {'before SOF':>10} {'reads':>5} {'bytes read':>11} "
        f"{'% of file':>9} {'parse us':>22}  verdict"
    )
    for case in cases():
        reader = CountingReader(case.data)
        outcome = verdict(case.data, reader)
        metadata = f"{jpeg_metadata_bytes(case.data) / KIB:.0f} KiB" if case.data[:2] == b"\xff\xd8" else "-"
        size = (
            f"{len(case.data) / MIB:.2f} MiB" if len(case.data) >= MIB else f"{len(case.data) / KIB:.0f} KiB"
        )
        share = 100 * reader.bytes_read / len(case.data)
        parse_us = parse_microseconds(case.data, args.repeats)
        print(
            f"{case.name:<40} {size:>10} {metadata:>10} {reader.calls:>5} {reader.bytes_read:>11,} "
            f"{share:>8.2f}% {parse_us.show():>22}  {outcome}"
        )
    print(f"(at the end: {load()})")


if __name__ == "__main__":
    main()
