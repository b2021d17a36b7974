"""The whole-file image check against the head-only one, and what each costs per upload.

`make bench` section `image_check`. For JPEG, PNG and WEBP files of about 1, 5 and 10 MiB
(pseudo-random pixels, so the files are as large as their dimensions allow; made here with
Pillow, a dev dependency only), and a decompression bomb (a 16-bit RGBA PNG of 9459x9459 px,
just under the routes' pixel limit, that inflates to 716 MB: the most the check is ever made
to inflate), each sample times, side by side and alternating, the head-only check
(`read_image_info`, what decision 13 did before) and the full one (`read_image_info` then
`verify_image`), over an in-memory reader that counts its calls (each is one ranged S3 GET
in the function) and bytes. Times are parsing, inflating and slicing only: S3's own time
is an assumption below. Peak memory is tracemalloc's peak over one untimed call of each.

Cost per upload of the full check on Lambda: its extra CPU ms scaled to the submit
function's memory share of a vCPU (template.yaml), plus the extra bytes at an assumed S3
throughput, at the arm64 GB-second price, plus its extra GETs; against the paid call it
saves when the provider would fail the image: each route's estimate for the stack's
default options (routes that publish no price are listed without one).

    .venv/bin/python bench/run.py --quick --sections image_check --out /tmp/b
"""

from __future__ import annotations

import io
import math
import random
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

from cost import LAMBDA_VCPU_MB, PRICES, template_facts
from image_head import CountingReader
from measure import MIB, Summary
from PIL import Image

from i2v.domain import Options
from i2v.media.image import READ_CHUNK_BYTES, read_image_info, verify_image
from i2v.providers import ROUTES, route_entry
from i2v.providers.route import RouteSettings

SEED = 2026
SIZES_MIB = (1, 5, 10)
FORMATS = {"jpeg": ("JPEG", {"quality": 95}), "png": ("PNG", {}), "webp": ("WEBP", {"quality": 100})}
# Lambda's own S3 download rate is not measured here: the figure cost.py assumes for videos.
S3_MIB_PER_SECOND = 20.0


def head_only(reader: CountingReader) -> None:
    read_image_info(reader, len(reader.data))


def full(reader: CountingReader) -> None:
    verify_image(reader, len(reader.data), read_image_info(reader, len(reader.data)))


def noise(width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(SEED).randbytes(width * height * 3))


def encoded(image: Image.Image, image_format: str) -> bytes:
    name, options = FORMATS[image_format]
    out = io.BytesIO()
    image.save(out, name, **options)
    return out.getvalue()


def image_of(image_format: str, mib: float) -> tuple[str, bytes]:
    """A 4:3 noise image of about `mib` MiB (never over it): sized from a sample's bytes per pixel."""
    sample = encoded(noise(512, 384), image_format)
    pixels = mib * MIB / (len(sample) / (512 * 384)) * 0.97
    width = int((pixels * 4 / 3) ** 0.5)
    height = width * 3 // 4
    data = encoded(noise(width, height), image_format)
    while len(data) > mib * MIB:
        width, height = int(width * 0.98), int(height * 0.98)
        data = encoded(noise(width, height), image_format)
    return f"{image_format.upper()} {width}x{height}", data


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + chunk_type + body + zlib.crc32(chunk_type + body).to_bytes(4, "big")


def bomb() -> tuple[str, bytes]:
    """The most a PNG under the pixel limit makes the check inflate: 16-bit RGBA, 8 bytes a pixel."""
    side = math.isqrt(RouteSettings.model_fields["image_max_pixels"].default)
    row = bytes(1 + side * 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([16, 6, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    return f"PNG bomb {side}x{side} 16-bit RGBA ({side * len(row) / 1e6:.0f} MB inflated)", png


def peak_mib(check: Callable[[CountingReader], None], data: bytes) -> float:
    tracemalloc.start()
    try:
        check(CountingReader(data))
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def figures(summary: Summary, digits: int = 3) -> dict[str, float]:
    return {
        "median": round(summary.median, digits),
        "min": round(summary.low, digits),
        "max": round(summary.high, digits),
    }


def measure(name: str, data: bytes, repeats: int) -> dict[str, Any]:
    head_ms: list[float] = []
    full_ms: list[float] = []
    for _ in range(repeats):
        for check, samples in ((head_only, head_ms), (full, full_ms)):
            began = time.perf_counter()
            check(CountingReader(data))
            samples.append((time.perf_counter() - began) * 1000)
    head_reader, full_reader = CountingReader(data), CountingReader(data)
    head_only(head_reader)
    full(full_reader)
    return {
        "image": name,
        "mib": round(len(data) / MIB, 2),
        "head_ms": figures(Summary.of(head_ms)),
        "full_ms": figures(Summary.of(full_ms)),
        "ratio": figures(Summary.of([f / h for f, h in zip(full_ms, head_ms, strict=True)]), 1),
        "head_peak_mib": round(peak_mib(head_only, data), 3),
        "full_peak_mib": round(peak_mib(full, data), 3),
        "head_reads": head_reader.calls,
        "full_reads": full_reader.calls,
        "full_bytes_read": full_reader.bytes_read,
        "extra_bytes_read": full_reader.bytes_read - head_reader.bytes_read,
    }


def paid_calls() -> dict[str, float | None]:
    """Each route's estimate for one task at the stack's default resolution and duration."""
    facts = template_facts()
    options = Options(prompt="", resolution=facts["default_resolution"], duration=facts["default_duration_s"])
    return {name: route_entry(name).load_settings({}).estimate_cost_usd(options) for name in ROUTES}


def check_cost(case: dict[str, Any], memory_mb: int) -> dict[str, float]:
    """USD per upload of the full check beyond the head-only one, on Lambda."""
    cpu_s = (case["full_ms"]["median"] - case["head_ms"]["median"]) / 1000 * LAMBDA_VCPU_MB / memory_mb
    transfer_s = case["extra_bytes_read"] / MIB / S3_MIB_PER_SECOND
    seconds = cpu_s + transfer_s
    gets = case["full_reads"] - case["head_reads"]
    usd = seconds * memory_mb / 1024 * PRICES["lambda_arm64_gb_second"].usd
    usd += gets * PRICES["s3_get_request"].usd
    return {"lambda_seconds": round(seconds, 4), "extra_gets": gets, "usd": usd}


def run(quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 9
    sizes = (1,) if quick else SIZES_MIB
    cases = [measure(*image_of(image_format, mib), repeats) for mib in sizes for image_format in FORMATS]
    worst = measure(*bomb(), max(1, repeats // 3))
    memory_mb = template_facts()["memory_mb"]["SubmitFunction"]
    for case in [*cases, worst]:
        case["cost"] = check_cost(case, memory_mb)
    prices = paid_calls()
    priced = [usd for usd in prices.values() if usd is not None]
    dearest_check = max(case["cost"]["usd"] for case in cases)
    return {
        "image_check": {
            "method": (
                f"head-only vs full check, {repeats} alternating pairs per image, in-memory reader; "
                f"Lambda cost = (extra CPU ms x {LAMBDA_VCPU_MB}/{memory_mb} MB + extra bytes at "
                f"{S3_MIB_PER_SECOND:g} MiB/s) x {memory_mb} MB x the arm64 GB-s price + extra GETs "
                f"({READ_CHUNK_BYTES // MIB} MiB each)"
            ),
            "cases": cases,
            "bomb": worst,
            "submit_memory_mb": memory_mb,
            "s3_mib_per_second_assumed": S3_MIB_PER_SECOND,
            "max_full_ms": max(case["full_ms"]["median"] for case in cases),
            "max_peak_mib": max(case["full_peak_mib"] for case in [*cases, worst]),
            "bomb_full_ms": worst["full_ms"]["median"],
            "max_check_usd": dearest_check,
            "paid_call_usd": prices,
            "cheapest_paid_call_usd": min(priced),
            # How many uploads' checks one refused paid call pays for, at the dearest check.
            "cost_ratio": round(min(priced) / dearest_check),
        }
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
