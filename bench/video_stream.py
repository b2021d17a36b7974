"""Video streaming: stream_video_to_s3 against boto3's upload_fileobj, side by side.

Both sides move the same bytes the same way: a loopback HTTP server (its own process)
generates an MP4-looking body on the fly (a valid `ftyp` box, then a fixed pseudo-random
1 MiB block over and over) served as video/mp4 with a Content-Length, and each sample is
a fresh worker process that GETs it and writes it to moto's S3 server (its own process, on
loopback, so moto's copy of the video is not in the worker) through the functions' own
boto3 client (i2v.aws.client, AWS_ENDPOINT_URL pointing at moto).

- ours: `i2v.media.video.stream_video_to_s3` (SSRF-guarded httpcore download, size cap,
  signature check, SHA-256 on the fly, parts of 8 MiB uploading `--in-flight` at a time,
  4 by default as in production, CRC32 per part). The TLS context the function makes once
  per process is made before the clock starts. The worker checks the SHA-256 and the
  stored length.
- baseline: boto3's `s3.upload_fileobj(response, ...)` with its default TransferConfig
  (8 MiB parts, 10 threads, CRC32 by default), reading straight from the standard
  library's `http.client` response for the same URL: the same bytes off the same kind of
  socket, with none of the guards and no hash. That is the fastest plain way to pipe an
  HTTP body into S3 with boto3, so the ratio prices the guards and the hash.
- tm (`--contenders ours tm baseline`, for comparison only): option (a) of issue 6, the
  guarded VideoBody behind a file-like reader fed to `upload_fileobj` with a TransferConfig
  of `--in-flight` threads and as many chunks in memory. It measured as fast as ours with
  more memory, so production kept the part pool (i2v.media.sink).

Contenders alternate (ours, baseline, ours, baseline, ...) for each size, after one
discarded warm-up of each. Each worker imports everything and makes the S3 calls a
transfer makes once on a small object before the clock starts, then times the transfer
alone (a body under 256 MiB goes up several times, to 256 MiB in all, and the sample is the
mean: one 10 MiB transfer lasts about 0.1 s, too short to time alone on a busy machine);
peak RSS is the whole worker process's high-water mark (VmHWM) at the end.
moto is reset after every sample, so its memory does not pile up. Throughput is MiB/s of
body; ratio is ours / the baseline of the same pair.

`run(quick)` is what `bench/run.py` calls (the `stream` key of reports/bench.json).

Run: .venv/bin/python bench/video_stream.py [--quick] [--pairs 5] [--sizes-mib 10 100 1024]
                                            [--in-flight 2] [--contenders ours baseline]
                                            [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from measure import MIB, ROOT, Summary, load, machine

BLOCK_SIZE = MIB
BLOCK_SEED = 2026
FTYP_BOX = (24).to_bytes(4, "big") + b"ftypisom" + (512).to_bytes(4, "big") + b"isomiso2avc1mp41"
BUCKET = "media"
KEY = "videos/bench.mp4"
CONTENDERS = ("ours", "baseline", "tm")
FULL_SIZES_MIB = (10, 100, 1024)
FULL_PAIRS = 9  # one 1 GiB sample swings by a third on this machine: 5 medians were not enough
QUICK_SIZES_MIB = (10, 40)
QUICK_PAIRS = 2
DEFAULT_IN_FLIGHT = 4  # i2v.media.sink.DEFAULT_MAX_IN_FLIGHT
RSS_BOUND_MIB = 128.0
WORKER_TIMEOUT_SECONDS = 600


def generated_blocks(size: int) -> Iterator[bytes | memoryview]:
    """The body served for `size` bytes: the ftyp box, then the same 1 MiB block repeated."""
    block = random.Random(BLOCK_SEED).randbytes(BLOCK_SIZE)
    yield FTYP_BOX[:size]
    sent = len(FTYP_BOX[:size])
    while sent < size:
        piece = memoryview(block)[: min(BLOCK_SIZE, size - sent)]
        yield piece
        sent += len(piece)


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in generated_blocks(size):
        digest.update(piece)
    return digest.hexdigest()


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


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def warmed_up_s3() -> Any:
    """The functions' own S3 client, with every call a transfer makes made once on a small
    object (models loaded, connections open, s3transfer imported) before the clock starts."""
    import boto3.s3.transfer  # noqa: F401 - loaded here, not on the clock

    import i2v.media.video  # noqa: F401 - the same for every contender
    from i2v.aws import client

    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="warm-up", ChecksumAlgorithm="CRC32")[
        "UploadId"
    ]
    s3.upload_part(
        Bucket=BUCKET, Key="warm-up", UploadId=upload_id, PartNumber=1, Body=b"x", ChecksumAlgorithm="CRC32"
    )
    s3.abort_multipart_upload(Bucket=BUCKET, Key="warm-up", UploadId=upload_id)
    s3.put_object(Bucket=BUCKET, Key="warm-up", Body=b"x")
    s3.upload_fileobj(io.BytesIO(b"x"), BUCKET, "warm-up")
    tls_context()
    return s3


class BodyReader(io.RawIOBase):
    """A guarded VideoBody as a raw file: what upload_fileobj reads in option (a)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        taken = min(len(buffer), len(self._pending))
        buffer[:taken] = self._pending[:taken]
        self._pending = self._pending[taken:]
        return taken


@functools.cache
def tls_context() -> ssl.SSLContext:
    """What the function makes on its first download, once per process (certifi's CA
    bundle, some 20 ms): made before the clock starts and passed in."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def transfer_ours(s3: Any, url: str, in_flight: int) -> tuple[int, str | None]:
    from i2v.media.video import stream_video_to_s3

    stored = stream_video_to_s3(
        url,
        policy=bench_policy(),
        s3=s3,
        bucket=BUCKET,
        key=KEY,
        metadata={},
        max_in_flight=in_flight,
        ssl_context=tls_context(),
    )
    return stored.size, stored.sha256


def transfer_tm(s3: Any, url: str, in_flight: int) -> tuple[int, str | None]:
    from boto3.s3.transfer import TransferConfig

    from i2v.media.fetch import VIDEO_CONTENT_TYPE, open_video
    from i2v.media.sink import DEFAULT_PART_SIZE

    config = TransferConfig(
        multipart_threshold=DEFAULT_PART_SIZE,
        multipart_chunksize=DEFAULT_PART_SIZE,
        max_concurrency=in_flight,
    )
    config.max_in_memory_upload_chunks = in_flight  # s3transfer's own bound on buffered parts
    with open_video(url, bench_policy(), ssl_context=tls_context()) as body:
        reader = io.BufferedReader(BodyReader(iter(body)), buffer_size=256 * 1024)
        s3.upload_fileobj(
            reader,
            BUCKET,
            KEY,
            ExtraArgs={"ContentType": VIDEO_CONTENT_TYPE, "Metadata": {}, "ChecksumAlgorithm": "CRC32"},
            Config=config,
        )
        return body.size, body.sha256


def transfer_baseline(s3: Any, url: str, in_flight: int) -> tuple[int, str | None]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        s3.upload_fileobj(response, BUCKET, KEY, ExtraArgs={"ContentType": "video/mp4"})
    finally:
        connection.close()
    return -1, None


TRANSFERS = {"ours": transfer_ours, "tm": transfer_tm, "baseline": transfer_baseline}


def bench_policy() -> Any:
    from i2v.media.video import DownloadPolicy

    return DownloadPolicy(
        allowed_hosts=("127.0.0.1",),
        allow_http=True,
        allow_private_networks=True,
        max_bytes=2048 * MIB,
        timeout_seconds=WORKER_TIMEOUT_SECONDS,
    )


def transfers_per_sample(size: int) -> int:
    """Bodies under 256 MiB go up several times in one sample (at least 256 MiB in all): a 10 MiB
    transfer takes about 0.1 s here, where one scheduling hiccup would be the figure."""
    return max(1, (256 * MIB) // size)


def work(contender: str, port: int, size: int, sha256: str, in_flight: int) -> None:
    s3 = warmed_up_s3()
    url = f"http://127.0.0.1:{port}/video/{size}.mp4"
    rss_before = proc_status_kib("VmRSS")
    repeats = transfers_per_sample(size)
    elapsed = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        got_size, got_sha256 = TRANSFERS[contender](s3, url, in_flight)
        elapsed += time.perf_counter() - started
        in_s3 = int(s3.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"])
        if in_s3 != size or got_size not in (-1, size) or got_sha256 not in (None, sha256):
            raise SystemExit(f"{contender}: wrong video stored: {got_size} bytes {got_sha256}, {in_s3} in S3")
    peak = proc_status_kib("VmHWM")
    print(json.dumps({"seconds": elapsed / repeats, "rss_before_kib": rss_before, "rss_peak_kib": peak}))


# --- the driver --------------------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, int(server.stdout.readline())


def run_worker(
    contender: str, port: int, size: int, sha256: str, in_flight: int, moto_url: str
) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "pipeline"), str(ROOT)]),
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [sys.executable, __file__, "--work", contender, str(port), str(size), sha256, str(in_flight)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False, timeout=WORKER_TIMEOUT_SECONDS
        )
    finally:  # drop the stored video, so moto's memory does not pile up
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    if done.returncode != 0:
        raise RuntimeError(f"{contender} worker failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    sample = json.loads(done.stdout.splitlines()[-1])
    return {
        "mib_s": size / MIB / sample["seconds"],
        "peak_rss_mib": sample["rss_peak_kib"] / 1024,
        "rss_before_mib": sample["rss_before_kib"] / 1024,
    }


def summary(samples: Sequence[float]) -> dict[str, float]:
    of = Summary.of(samples)
    return {"median": of.median, "low": of.low, "high": of.high, "n": of.count}


def size_row(size_mib: int, samples: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """One size's summaries: each contender's throughput and RSS, and the pairs' ratios."""
    row: dict[str, Any] = {"size_mib": size_mib}
    for contender, runs in samples.items():
        row[f"{contender}_mib_s"] = summary([run["mib_s"] for run in runs])
        row[f"{contender}_peak_rss_mib"] = summary([run["peak_rss_mib"] for run in runs])
        row[f"{contender}_rss_before_mib"] = summary([run["rss_before_mib"] for run in runs])
    for contender, key in (("ours", "ratio"), ("tm", "tm_ratio")):
        if contender in samples and "baseline" in samples:
            pairs = zip(samples[contender], samples["baseline"], strict=True)
            row[key] = summary([mine["mib_s"] / theirs["mib_s"] for mine, theirs in pairs])
    if "ours" in samples:
        row["peak_rss_mib"] = row["ours_peak_rss_mib"]
    return row


def measure(
    sizes_mib: Sequence[int],
    pairs: int,
    *,
    in_flight: int = DEFAULT_IN_FLIGHT,
    contenders: Sequence[str] = ("ours", "baseline"),
    progress: bool = False,
) -> dict[str, Any]:
    """Every contender `pairs` times per size, alternating, in fresh workers."""
    from local.moto_server import MotoServer

    started = time.monotonic()
    load_before = load()
    per_size: dict[int, dict[str, list[dict[str, float]]]] = {}
    with contextlib.ExitStack() as stack:
        moto_url = stack.enter_context(MotoServer()).url
        server, port = start_server()
        stack.callback(server.wait)
        stack.callback(server.kill)
        warm_size = min(sizes_mib) * MIB
        for contender in contenders:  # discarded: page cache, .pyc, moto's first answers
            run_worker(contender, port, warm_size, expected_sha256(warm_size), in_flight, moto_url)
        for size_mib in sizes_mib:
            size = size_mib * MIB
            sha256 = expected_sha256(size)
            per_size[size_mib] = {contender: [] for contender in contenders}
            for round_number in range(pairs):
                for contender in contenders:
                    sample = run_worker(contender, port, size, sha256, in_flight, moto_url)
                    per_size[size_mib][contender].append(sample)
                    if progress:
                        print(
                            f"  {size_mib:>5} MiB #{round_number + 1} {contender:>8}: "
                            f"{sample['mib_s']:7.1f} MiB/s, peak RSS {sample['peak_rss_mib']:6.1f} MiB",
                            flush=True,
                        )
    sizes = [size_row(size_mib, samples) for size_mib, samples in per_size.items()]
    result: dict[str, Any] = {
        "sizes": sizes,
        "pairs": pairs,
        "in_flight": in_flight,
        "part_mib": 8,
        "contenders": list(contenders),
        "rss_bound_mib": RSS_BOUND_MIB,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load(),
        "seconds": time.monotonic() - started,
    }
    if all("ratio" in row for row in sizes):
        result["min_throughput_ratio"] = min(row["ratio"]["median"] for row in sizes)
        result["max_peak_rss_mib"] = max(row["peak_rss_mib"]["high"] for row in sizes)
    return result


def run(quick: bool) -> dict[str, Any]:
    """For bench/run.py: ours against the baseline; `quick` in well under a minute.

    `min_throughput_ratio` is the smallest per-size median of ours / baseline (target
    >= 0.9); `max_peak_rss_mib` the largest peak RSS of any of our workers (target <= 128).
    """
    if quick:
        return measure(QUICK_SIZES_MIB, QUICK_PAIRS)
    return measure(FULL_SIZES_MIB, FULL_PAIRS)


def show(result: dict[str, Any]) -> None:
    def cell(stat: dict[str, float], fmt: str = ".1f") -> str:
        return f"{stat['median']:{fmt}} [{stat['low']:{fmt}}-{stat['high']:{fmt}}]"

    contenders = result["contenders"]
    print(
        f"\n== N={result['pairs']} per contender and size, alternating; parts {result['part_mib']} MiB, "
        f"{result['in_flight']} in flight; median [min-max] =="
    )
    header = f"{'body':>9}" + "".join(f" {c + ' MiB/s':>24} {c + ' peak RSS MiB':>24}" for c in contenders)
    if "ratio" in result["sizes"][0]:
        header += f" {'ratio ours/baseline':>22}"
    if "tm_ratio" in result["sizes"][0]:
        header += f" {'ratio tm/baseline':>22}"
    print(header)
    for row in result["sizes"]:
        line = f"{row['size_mib']:>5} MiB"
        for contender in contenders:
            line += f" {cell(row[f'{contender}_mib_s']):>24} {cell(row[f'{contender}_peak_rss_mib']):>24}"
        if "ratio" in row:
            line += f" {cell(row['ratio'], '.2f'):>22}"
        if "tm_ratio" in row:
            line += f" {cell(row['tm_ratio'], '.2f'):>22}"
        print(line)
    if "min_throughput_ratio" in result:
        print(
            f"min throughput ratio {result['min_throughput_ratio']:.2f} (target >= 0.9), "
            f"max peak RSS {result['max_peak_rss_mib']:.1f} MiB (target <= {RSS_BOUND_MIB:.0f})"
        )
    print(f"{result['seconds']:.0f} s; load before: {result['load_before']}; after: {result['load_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {QUICK_SIZES_MIB} MiB, {QUICK_PAIRS} pairs"
    )
    parser.add_argument("--pairs", type=int, help=f"rounds per size (default {FULL_PAIRS})")
    parser.add_argument("--sizes-mib", type=int, nargs="+", help=f"body sizes (default {FULL_SIZES_MIB})")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, help="parts uploading at once")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=["ours", "baseline"])
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--work", nargs=5, metavar=("WHO", "PORT", "SIZE", "SHA256", "IN_FLIGHT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.work:
        contender, port, size, sha256, in_flight = args.work
        work(contender, int(port), int(size), sha256, int(in_flight))
        return

    print(machine())
    sizes = args.sizes_mib or (QUICK_SIZES_MIB if args.quick else FULL_SIZES_MIB)
    pairs = args.pairs or (QUICK_PAIRS if args.quick else FULL_PAIRS)
    result = measure(sizes, pairs, in_flight=args.in_flight, contenders=args.contenders, progress=True)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
