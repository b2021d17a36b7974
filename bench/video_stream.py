"""Video streaming: throughput and memory of i2v.media.video.stream_video_to_s3.

A loopback HTTP server (its own process, so its buffers are not counted) generates an MP4-
looking body on the fly: a valid `ftyp` box, then a fixed pseudo-random 1 MiB block over
and over, served as video/mp4 with a Content-Length. The S3 client is a stand-in with
boto3's method names and keyword arguments that keeps only the length and a CRC32 of each
part, so the measurement sees the streaming code, not moto's (or anyone's) copy of the
video. With `--s3 moto` the worker instead uses the production boto3 client (i2v.aws.client)
against moto's server in its own process: slower, but it shows whether boto3 itself copies
a part on the way out (moto's copy of the video lives in the other process).

Each sample is a fresh worker process that downloads one video twice:
- plain: wall time (throughput) and peak RSS above the RSS before the download (the
  kernel's high-water mark, VmHWM, reset through /proc/self/clear_refs just before), with
  the once-per-process TLS context measured apart;
- under tracemalloc: the peak of Python's traced heap during the download.
The worker then checks the digest and length against the generated body.

Run: .venv/bin/python bench/video_stream.py [--runs 5] [--sizes-mib 64 256 1024]
                                            [--s3 discard|moto] [--part-mib 8] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from measure import MIB, ROOT, Summary, load, machine

BLOCK_SIZE = MIB
BLOCK_SEED = 2026
FTYP_BOX = (24).to_bytes(4, "big") + b"ftypisom" + (512).to_bytes(4, "big") + b"isomiso2avc1mp41"
DEFAULT_PART_MIB = 8  # i2v.media.video.DEFAULT_PART_SIZE


def generated_blocks(size: int) -> Iterator[bytes | memoryview]:
    """The body served for `size` bytes: the ftyp box, then the same 1 MiB block repeated."""
    block = random.Random(BLOCK_SEED).randbytes(BLOCK_SIZE)
    yield FTYP_BOX[:size]
    sent = len(FTYP_BOX[:size])
    while sent < size:
        piece = memoryview(block)[: min(BLOCK_SIZE, size - sent)]
        yield piece
        sent += len(piece)


# --- the server process ------------------------------------------------------------------


class VideoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        size = int(self.path.rsplit("/", 1)[-1].removesuffix(".mp4"))
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for piece in generated_blocks(size):
            self.wfile.write(piece)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), VideoHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- the worker process ------------------------------------------------------------------


class DiscardingS3:
    """boto3's S3 multipart calls, keeping nothing of a part but its length and CRC32."""

    def __init__(self) -> None:
        self.part_sizes: list[int] = []
        self.stored_bytes = 0

    def create_multipart_upload(self, *, Bucket: str, Key: str, **kwargs: Any) -> dict[str, Any]:
        self.part_sizes.clear()
        self.stored_bytes = 0
        return {"Bucket": Bucket, "Key": Key, "UploadId": "bench-upload"}

    def upload_part(
        self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes | bytearray, **kwargs: Any
    ) -> dict[str, Any]:
        # A real client computes the CRC32 it was asked for (ChecksumAlgorithm) over the body.
        crc = zlib.crc32(Body)
        self.part_sizes.append(len(Body))
        self.stored_bytes += len(Body)
        return {
            "ETag": f'"{PartNumber:08x}"',
            "ChecksumCRC32": base64.b64encode(crc.to_bytes(4, "big")).decode(),
        }

    def complete_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, MultipartUpload: Any, **kwargs: Any
    ) -> dict[str, Any]:
        return {"Bucket": Bucket, "Key": Key, "ETag": '"complete"'}

    def abort_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, **kwargs: Any
    ) -> dict[str, Any]:
        return {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes | bytearray, **kwargs: Any) -> dict[str, Any]:
        self.part_sizes = [len(Body)]
        self.stored_bytes = len(Body)
        return {"ETag": '"single"'}


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> None:
    # Writing 5 resets the peak resident set size (VmHWM) to the current one.
    Path("/proc/self/clear_refs").write_text("5")


def boto3_s3() -> Any:
    """The functions' own S3 client (AWS_ENDPOINT_URL points it at moto), warmed up: the
    calls a download makes have loaded their models before anything is measured."""
    from i2v.aws import client

    s3 = client("s3")
    s3.create_bucket(Bucket="media")
    upload_id = s3.create_multipart_upload(Bucket="media", Key="warm-up", ChecksumAlgorithm="CRC32")[
        "UploadId"
    ]
    s3.upload_part(
        Bucket="media", Key="warm-up", UploadId=upload_id, PartNumber=1, Body=b"x", ChecksumAlgorithm="CRC32"
    )
    s3.abort_multipart_upload(Bucket="media", Key="warm-up", UploadId=upload_id)
    s3.put_object(Bucket="media", Key="warm-up", Body=b"x")
    return s3


def stored_size(s3: Any) -> int:
    if isinstance(s3, DiscardingS3):
        return s3.stored_bytes
    return int(s3.head_object(Bucket="media", Key="videos/bench.mp4")["ContentLength"])


def profile(port: int, size: int, part_size: int) -> None:
    """One download under cProfile: where the time goes (the profiler slows it down)."""
    import cProfile
    import pstats

    from i2v.media.video import DownloadPolicy, stream_video_to_s3

    policy = DownloadPolicy(
        allowed_hosts=("127.0.0.1",),
        allow_http=True,
        allow_private_networks=True,
        max_bytes=1024 * MIB,
        timeout_seconds=120,
    )
    url = f"http://127.0.0.1:{port}/video/{size}.mp4"
    profiler = cProfile.Profile()
    profiler.runcall(
        stream_video_to_s3,
        url,
        policy=policy,
        s3=DiscardingS3(),
        bucket="media",
        key="videos/bench.mp4",
        metadata={},
        part_size=part_size,
    )
    pstats.Stats(profiler).sort_stats("tottime").print_stats(10)


def work(port: int, size: int, part_size: int, real_s3: bool) -> None:
    import ssl
    import tracemalloc

    import certifi

    from i2v.media.video import DownloadPolicy, stream_video_to_s3

    policy = DownloadPolicy(
        allowed_hosts=("127.0.0.1",),
        allow_http=True,
        allow_private_networks=True,
        max_bytes=1024 * MIB,
        timeout_seconds=120,
    )
    s3 = boto3_s3() if real_s3 else DiscardingS3()
    url = f"http://127.0.0.1:{port}/video/{size}.mp4"

    # The function builds this TLS context (certifi's CA bundle) once per process, on its
    # first download; it is made here, measured on its own and passed in, so the download's
    # own peak is what remains.
    rss_before_tls = proc_status_kib("VmRSS")
    reset_peak_rss()
    tls_context = ssl.create_default_context(cafile=certifi.where())
    tls_context_kib = proc_status_kib("VmHWM") - rss_before_tls

    def download() -> Any:
        return stream_video_to_s3(
            url,
            policy=policy,
            s3=s3,
            bucket="media",
            key="videos/bench.mp4",
            metadata={},
            part_size=part_size,
            ssl_context=tls_context,
        )

    rss_before = proc_status_kib("VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    stored = download()
    elapsed = time.perf_counter() - started
    rss_peak = proc_status_kib("VmHWM")

    tracemalloc.start()
    traced_before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    download()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    expected = hashlib.sha256()
    for piece in generated_blocks(size):
        expected.update(piece)
    in_s3 = stored_size(s3)
    if stored.size != size or in_s3 != size or stored.sha256 != expected.hexdigest():
        raise SystemExit(f"wrong video stored: {stored} vs {size} bytes, {in_s3} in S3")
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "rss_before_kib": rss_before,
                "rss_peak_delta_kib": rss_peak - rss_before,
                "tls_context_kib": tls_context_kib,
                "traced_peak_bytes": traced_peak - traced_before,
                "parts": -(-size // part_size),
            }
        )
    )


# --- the driver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_before_kib: int
    rss_peak_delta_kib: int
    tls_context_kib: int
    traced_peak_bytes: int
    parts: int


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, int(server.stdout.readline())


def run_worker(port: int, size: int, part_size: int, moto_url: str | None) -> Sample:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "pipeline")}
    command = [sys.executable, __file__, "--work", str(port), str(size), str(part_size)]
    if moto_url is not None:
        command.append("--real-s3")
        env |= {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    if moto_url is not None:  # drop the stored video, so moto's memory does not pile up
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    return Sample(**json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--s3", choices=("discard", "moto"), default="discard")
    parser.add_argument("--real-s3", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part-mib", type=int, default=DEFAULT_PART_MIB)
    parser.add_argument("--profile", action="store_true", help="profile one download of the first size")
    parser.add_argument("--work", nargs=3, type=int, metavar=("PORT", "SIZE", "PART"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.work:
        port, size, part_size = args.work
        work(port, size, part_size, real_s3=args.real_s3)
        return

    print(machine())
    part_size = args.part_mib * MIB
    print(f"part size {args.part_mib} MiB; body served from a loopback server process; S3: {args.s3}")
    with contextlib.ExitStack() as stack:
        moto_url = None
        if args.s3 == "moto":
            from local.moto_server import MotoServer

            moto_url = stack.enter_context(MotoServer()).url
        server, port = start_server()
        stack.callback(server.wait)
        stack.callback(server.kill)
        if args.profile:
            profile(port, args.sizes_mib[0] * MIB, part_size)
            return
        run_worker(port, 16 * MIB, part_size, moto_url)  # warm-up, discarded: page cache, .pyc
        results: dict[int, list[Sample]] = {size: [] for size in args.sizes_mib}
        for _ in range(args.runs):  # interleaved across sizes
            for size_mib in args.sizes_mib:
                results[size_mib].append(run_worker(port, size_mib * MIB, part_size, moto_url))

    print(f"\n== stream_video_to_s3, N={args.runs} fresh workers per size; median [min-max] ==")
    print(
        f"{'body':>8} {'parts':>6} {'MiB/s':>22} {'peak RSS delta MiB':>22} "
        f"{'traced heap peak MiB':>22} {'RSS before MiB':>16}"
    )
    for size_mib, samples in results.items():
        throughput = Summary.of([size_mib / s.seconds for s in samples])
        rss = Summary.of([s.rss_peak_delta_kib / 1024 for s in samples])
        traced = Summary.of([s.traced_peak_bytes / MIB for s in samples])
        before = Summary.of([s.rss_before_kib / 1024 for s in samples])
        print(
            f"{size_mib:>5} MiB {samples[0].parts:>6} {throughput.show():>22} {rss.show(fmt='.2f'):>22} "
            f"{traced.show(fmt='.2f'):>22} {before.median:>16.1f}"
        )
    tls = Summary.of([s.tls_context_kib / 1024 for samples in results.values() for s in samples])
    print(
        f"plus, once per process, the TLS context with certifi's CA bundle: {tls.show(fmt='.2f')} MiB RSS "
        "(made before the download and passed in; the function makes it on its first download)"
    )
    print(f"(at the end: {load()})")


if __name__ == "__main__":
    main()
