"""Streaming a video from an untrusted URL into S3: real loopback servers, moto's S3."""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import av
import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws
from PIL import Image

from i2v.errors import DownloadFailed
from i2v.media.video import (
    DownloadPolicy,
    StoredVideo,
    host_is_allowed,
    is_forbidden_address,
    stream_video_to_s3,
)

BUCKET = "videos-bucket"
KEY = "videos/task-1.mp4"
METADATA = {"task-id": "task-1", "source-key": "incoming/cat.jpg"}
MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # S3's (and moto's) smallest part but the last

Route = Callable[[BaseHTTPRequestHandler], None]


# --- a real MP4 and real servers ---------------------------------------------------------


@pytest.fixture(scope="module")
def mp4() -> bytes:
    """A real H.264 MP4 of a few frames."""
    output = io.BytesIO()
    with av.open(output, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for shade in range(0, 250, 25):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (shade, 80, 160)))  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return output.getvalue()


def padded(mp4: bytes, total: int) -> bytes:
    """The MP4 grown to `total` bytes with a trailing `free` box: still a valid MP4."""
    payload = total - len(mp4) - 8
    return mp4 + struct.pack(">I", payload + 8) + b"free" + os.urandom(payload)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what several tests do on purpose."""


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 whose answers are set per path by each test."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requested_paths: list[str] = []
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        # A short poll keeps shutdown quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                state.requested_paths.append(self.path)
                route = state.routes.get(urlsplit(self.path).path)
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def answer(
    body: bytes,
    *,
    status: int = 200,
    content_type: str | None = "video/mp4",
    content_length: int | None = None,
) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        if content_type is not None:
            handler.send_header("Content-Type", content_type)
        length = len(body) if content_length is None else content_length
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(body)
        if length != len(body):
            handler.close_connection = True

    return route


def chunked(pieces: Callable[[], Iterable[bytes]], content_type: str = "video/mp4") -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for piece in pieces():
            handler.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def dribble(head: bytes, pause_seconds: float, for_seconds: float) -> Route:
    """Headers and the first bytes at once, then a byte every pause, for a long time."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(10 * MiB))
        handler.end_headers()
        handler.wfile.write(head)
        handler.wfile.flush()
        stop = time.monotonic() + for_seconds
        while time.monotonic() < stop:
            time.sleep(pause_seconds)
            handler.wfile.write(b"\x00")
            handler.wfile.flush()
        handler.close_connection = True

    return route


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    loopback = LoopbackServer()
    yield loopback
    loopback.close()


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def loopback_policy(**changes: Any) -> DownloadPolicy:
    """What the local stack allows: plain HTTP and loopback."""
    values: dict[str, Any] = {
        "allowed_hosts": ("127.0.0.1", "localhost"),
        "allow_http": True,
        "allow_private_networks": True,
        "max_bytes": 64 * MiB,
        "timeout_seconds": 10.0,
        "read_timeout_seconds": 5.0,
    }
    values.update(changes)
    return DownloadPolicy(**values)


def download(url: str, s3: Any, policy: DownloadPolicy | None = None, **options: Any) -> StoredVideo:
    return stream_video_to_s3(
        url,
        policy=policy or loopback_policy(),
        s3=s3,
        bucket=BUCKET,
        key=KEY,
        metadata=METADATA,
        part_size=PART_SIZE,
        **options,
    )


def refusal(url: str, s3: Any, policy: DownloadPolicy | None = None, **options: Any) -> DownloadFailed:
    with pytest.raises(DownloadFailed) as excinfo:
        download(url, s3, policy, **options)
    return excinfo.value


def assert_nothing_stored(s3: Any) -> None:
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


# --- success ------------------------------------------------------------------------------


def test_a_video_is_stored_with_its_hash_type_and_metadata(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a video served as video/mp4
    server.routes["/video.mp4"] = answer(mp4)

    # When it is streamed to S3
    stored = download(server.url("/video.mp4?signature=secret"), s3)

    # Then the object is the video, described and typed as such
    assert stored == StoredVideo(
        size=len(mp4), sha256=hashlib.sha256(mp4).hexdigest(), content_type="video/mp4"
    )
    stored_object = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored_object["Body"].read() == mp4
    assert stored_object["ContentType"] == "video/mp4"
    assert stored_object["Metadata"] == METADATA
    assert server.requested_paths == ["/video.mp4?signature=secret"]


def test_a_video_bigger_than_a_part_goes_up_in_parts(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a 12 MiB video, more than two 5 MiB parts, sent without Content-Length
    video = padded(mp4, 12 * MiB)
    server.routes["/video.mp4"] = chunked(lambda: (video[i : i + MiB] for i in range(0, len(video), MiB)))

    # When it is streamed to S3
    stored = download(server.url("/video.mp4"), s3)

    # Then it was assembled from three parts into the same bytes
    assert stored.size == len(video)
    assert stored.sha256 == hashlib.sha256(video).hexdigest()
    stored_object = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored_object["Body"].read() == video
    assert stored_object["ETag"].endswith('-3"')
    assert stored_object["ContentType"] == "video/mp4"
    assert stored_object["Metadata"] == METADATA
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


@pytest.mark.parametrize("content_type", ["application/octet-stream", "binary/octet-stream"])
def test_a_generic_content_type_is_accepted_for_an_mp4_body(
    server: LoopbackServer, s3: Any, mp4: bytes, content_type: str
) -> None:
    # Given an MP4 served under a generic type, as object stores do
    server.routes["/video"] = answer(mp4, content_type=content_type)

    # When it is streamed to S3
    stored = download(server.url("/video"), s3)

    # Then it is stored as video/mp4
    assert stored.size == len(mp4)
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["ContentType"] == "video/mp4"


@pytest.mark.parametrize("hop", ["relative", "absolute-other-server"])
def test_a_redirect_to_an_allowed_host_is_followed(
    server: LoopbackServer, s3: Any, mp4: bytes, hop: str
) -> None:
    # Given a URL that redirects, within the allow-list, to the video
    target = LoopbackServer()
    try:
        target.routes["/cdn/video.mp4"] = answer(mp4)
        server.routes["/cdn/video.mp4"] = answer(mp4)
        location = "/cdn/video.mp4" if hop == "relative" else target.url("/cdn/video.mp4", host="localhost")
        server.routes["/task/1/video"] = redirect(location, status=307)

        # When it is streamed to S3
        stored = download(server.url("/task/1/video"), s3)
    finally:
        target.close()

    # Then the redirect was followed to the video
    assert stored.sha256 == hashlib.sha256(mp4).hexdigest()
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == mp4


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    s3: Any, mp4: bytes, tls: TlsPair
) -> None:
    # Given an HTTPS server whose certificate names "localhost" only
    https = LoopbackServer(tls=tls.server)
    https.routes["/video.mp4"] = answer(mp4)
    try:
        # When the video is fetched by host name, with plain HTTP not allowed
        policy = loopback_policy(allowed_hosts=("localhost",), allow_http=False)
        stored = download(
            https.url("/video.mp4", host="localhost", scheme="https"), s3, policy, ssl_context=tls.client
        )
    finally:
        https.close()

    # Then the certificate was accepted for the name while the socket went to 127.0.0.1
    assert stored.size == len(mp4)


# --- refusals before any byte is stored ---------------------------------------------------------


def test_plain_http_is_refused_unless_allowed(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a video on plain HTTP and a policy for HTTPS only
    server.routes["/video.mp4"] = answer(mp4)

    # When it is fetched
    error = refusal(server.url("/video.mp4"), s3, loopback_policy(allow_http=False))

    # Then it is refused for good, without a request
    assert (error.code, error.permanent) == ("VIDEO_URL_NOT_ALLOWED", True)
    assert server.requested_paths == []
    assert_nothing_stored(s3)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_loopback_is_refused_on_the_resolved_address(
    server: LoopbackServer, s3: Any, mp4: bytes, host: str
) -> None:
    # Given a video on loopback, its host on the allow-list, private networks not allowed
    server.routes["/video.mp4"] = answer(mp4)
    policy = loopback_policy(allow_private_networks=False)

    # When it is fetched
    error = refusal(server.url("/video.mp4", host=host), s3, policy)

    # Then the resolved address is refused for good, and no connection reached the server
    assert (error.code, error.permanent) == ("VIDEO_ADDRESS_FORBIDDEN", True)
    assert server.requested_paths == []
    assert_nothing_stored(s3)


@pytest.mark.parametrize(
    ("allowed_hosts", "url"),
    [
        ((), "http://127.0.0.1:9/video.mp4"),
        (("cdn.example.com",), "http://127.0.0.1:9/video.mp4"),
        ((".example.com",), "http://example.com.evil.test:9/video.mp4"),
        ((".example.com",), "http://notexample.com:9/video.mp4"),
    ],
    ids=["empty-allow-list", "other-host", "suffix-trick", "partial-label"],
)
def test_a_host_off_the_allow_list_is_refused(s3: Any, allowed_hosts: tuple[str, ...], url: str) -> None:
    # Given a URL whose host the allow-list does not name
    policy = loopback_policy(allowed_hosts=allowed_hosts)

    # When it is fetched
    error = refusal(url, s3, policy)

    # Then it is refused for good
    assert (error.code, error.permanent) == ("VIDEO_HOST_NOT_ALLOWED", True)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@127.0.0.1:9/video.mp4",
        "ftp://127.0.0.1/video.mp4",
        "file:///etc/passwd",
        "http://127.0.0.1:port/video.mp4",
        "/relative/video.mp4",
        "http://bad host/video.mp4",
    ],
)
def test_malformed_or_unsafe_urls_are_refused(s3: Any, url: str) -> None:
    # Given a URL with credentials, another scheme, or a broken form
    # When it is fetched
    error = refusal(url, s3)

    # Then it is refused for good
    assert (error.code, error.permanent) == ("VIDEO_URL_NOT_ALLOWED", True)


def test_a_redirect_to_a_host_off_the_allow_list_is_refused(server: LoopbackServer, s3: Any) -> None:
    # Given an allowed URL that redirects elsewhere
    server.routes["/video.mp4"] = redirect("https://attacker.example.net/video.mp4")

    # When it is fetched
    error = refusal(server.url("/video.mp4"), s3)

    # Then the hop is refused for good
    assert (error.code, error.permanent) == ("VIDEO_HOST_NOT_ALLOWED", True)
    assert "attacker.example.net" in error.message
    assert_nothing_stored(s3)


def test_a_redirect_from_https_to_plain_http_is_refused(s3: Any, mp4: bytes, tls: TlsPair) -> None:
    # Given an HTTPS URL that redirects to plain HTTP on an allowed host
    https = LoopbackServer(tls=tls.server)
    https.routes["/video.mp4"] = redirect(f"http://localhost:{https.port}/plain.mp4")
    try:
        # When it is fetched with plain HTTP not allowed
        policy = loopback_policy(allowed_hosts=("localhost",), allow_http=False)
        error = refusal(
            https.url("/video.mp4", host="localhost", scheme="https"), s3, policy, ssl_context=tls.client
        )
    finally:
        https.close()

    # Then the hop is refused for good
    assert (error.code, error.permanent) == ("VIDEO_URL_NOT_ALLOWED", True)


def test_redirects_are_capped(server: LoopbackServer, s3: Any) -> None:
    # Given a URL that redirects to itself
    server.routes["/loop"] = redirect("/loop", status=301)

    # When it is fetched with at most two redirects
    error = refusal(server.url("/loop"), s3, loopback_policy(max_redirects=2))

    # Then it stops after the first request and two hops
    assert (error.code, error.permanent) == ("VIDEO_TOO_MANY_REDIRECTS", True)
    assert server.requested_paths == ["/loop"] * 3


@pytest.mark.parametrize(
    ("content_type", "body_kind"),
    [
        ("text/html; charset=utf-8", "mp4"),
        ("video/quicktime", "mp4"),
        (None, "mp4"),
        ("video/mp4", "html"),
        ("application/octet-stream", "html"),
        ("video/mp4", "tiny"),
    ],
    ids=["html-type", "other-video-type", "no-type", "mp4-type-html-body", "octet-html-body", "four-bytes"],
)
def test_what_is_not_an_mp4_is_refused(
    server: LoopbackServer, s3: Any, mp4: bytes, content_type: str | None, body_kind: str
) -> None:
    # Given a URL whose type or body is not an MP4
    body = {"mp4": mp4, "html": b"<html><body>expired</body></html>", "tiny": b"\x00\x00\x00\x08"}
    server.routes["/video.mp4"] = answer(body[body_kind], content_type=content_type)

    # When it is fetched
    error = refusal(server.url("/video.mp4"), s3)

    # Then it is refused, nothing stored; not for good: an error page may clear, and the
    # finalizer's retries are bounded (MaxFinalizeAttempts)
    assert (error.code, error.permanent) == ("VIDEO_BAD_CONTENT_TYPE", False)
    assert_nothing_stored(s3)


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a response that declares 1 GiB
    server.routes["/video.mp4"] = answer(mp4, content_length=1024 * MiB)

    # When it is fetched with a 64 MiB cap
    error = refusal(server.url("/video.mp4"), s3)

    # Then it is refused for good
    assert (error.code, error.permanent) == ("VIDEO_TOO_LARGE", True)
    assert_nothing_stored(s3)


def test_a_body_over_the_cap_without_length_is_cut_off_and_its_upload_aborted(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a chunked body of 8 MiB, so one 5 MiB part goes up before the 6 MiB cap is passed
    video = padded(mp4, 8 * MiB)
    server.routes["/video.mp4"] = chunked(lambda: (video[i : i + MiB] for i in range(0, len(video), MiB)))

    # When it is fetched with that cap
    error = refusal(server.url("/video.mp4"), s3, loopback_policy(max_bytes=6 * MiB))

    # Then it is refused for good, and neither an object nor a pending upload is left
    assert (error.code, error.permanent) == ("VIDEO_TOO_LARGE", True)
    assert_nothing_stored(s3)


class SlowS3:
    """moto's client with every part upload slowed down, so parts are in flight while the
    download goes on; `fail_part` makes that part's upload fail."""

    def __init__(self, s3: Any, delay: float, fail_part: int | None = None) -> None:
        self._s3 = s3
        self._delay = delay
        self._fail_part = fail_part

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def upload_part(self, **kwargs: Any) -> Any:
        if kwargs["PartNumber"] == self._fail_part:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "UploadPart")
        time.sleep(self._delay)
        return self._s3.upload_part(**kwargs)


def test_the_cap_passed_with_parts_in_flight_aborts_the_upload(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a 40 MiB chunked body, a 22 MiB cap, and part uploads slow enough to overlap
    video = padded(mp4, 40 * MiB)
    server.routes["/video.mp4"] = chunked(lambda: (video[i : i + MiB] for i in range(0, len(video), MiB)))

    # When it is fetched with three parts in flight
    error = refusal(
        server.url("/video.mp4"), SlowS3(s3, 0.2), loopback_policy(max_bytes=22 * MiB), max_in_flight=3
    )

    # Then it is refused for good, and once the parts under way ended nothing was left
    assert (error.code, error.permanent) == ("VIDEO_TOO_LARGE", True)
    assert_nothing_stored(s3)


def test_a_part_upload_failing_mid_download_aborts_and_is_transient(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a 40 MiB video, and a store that fails the second part while others upload
    video = padded(mp4, 40 * MiB)
    server.routes["/video.mp4"] = chunked(lambda: (video[i : i + MiB] for i in range(0, len(video), MiB)))

    # When it is streamed with two parts in flight
    error = refusal(server.url("/video.mp4"), SlowS3(s3, 0.2, fail_part=2), max_in_flight=2)

    # Then the failure is transient and neither an object nor a pending upload is left
    assert (error.code, error.permanent) == ("VIDEO_STORE_FAILED", False)
    assert_nothing_stored(s3)


def test_the_hash_is_the_bodys_when_parts_overlap(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a 27 MiB video in uneven chunks, and slow part uploads
    video = padded(mp4, 27 * MiB)
    step = 700 * 1024 + 13
    server.routes["/video.mp4"] = chunked(lambda: (video[i : i + step] for i in range(0, len(video), step)))

    # When it is streamed with three parts in flight
    stored = download(server.url("/video.mp4"), SlowS3(s3, 0.1), max_in_flight=3)

    # Then the size, the hash and the stored bytes are the body's, from six parts
    assert stored.size == len(video)
    assert stored.sha256 == hashlib.sha256(video).hexdigest()
    stored_object = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert stored_object["Body"].read() == video
    assert stored_object["ETag"].endswith('-6"')


# --- transient failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (503, False), (404, False), (403, False), (410, False), (451, True)],
)
def test_http_errors_are_transient_unless_nothing_can_change_them(
    server: LoopbackServer, s3: Any, status: int, permanent: bool
) -> None:
    # Given a URL that answers with an error
    server.routes["/video.mp4"] = answer(b"oops", status=status, content_type="text/plain")

    # When it is fetched
    error = refusal(server.url("/video.mp4?X-Amz-Signature=abc"), s3)

    # Then the failure says so, without the URL's signature
    assert (error.code, error.permanent) == ("VIDEO_UNAVAILABLE", permanent)
    assert str(status) in error.message
    assert "abc" not in error.message
    assert_nothing_stored(s3)


def test_connection_refused_is_transient(s3: Any) -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # When a video is fetched from it
    error = refusal(f"http://127.0.0.1:{port}/video.mp4", s3)

    # Then the failure is transient
    assert (error.code, error.permanent) == ("VIDEO_DOWNLOAD_ERROR", False)


def test_a_truncated_body_is_transient_and_leaves_nothing(
    server: LoopbackServer, s3: Any, mp4: bytes
) -> None:
    # Given a response that closes the connection before its declared length
    server.routes["/video.mp4"] = answer(mp4, content_length=len(mp4) + 1000)

    # When it is fetched
    error = refusal(server.url("/video.mp4"), s3)

    # Then the failure is transient and nothing is stored
    assert (error.code, error.permanent) == ("VIDEO_DOWNLOAD_ERROR", False)
    assert_nothing_stored(s3)


def test_a_stalled_read_times_out(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a server that sends the first bytes, then waits
    server.routes["/video.mp4"] = dribble(mp4[:64], pause_seconds=1.0, for_seconds=1.0)

    # When it is fetched with a short per-read timeout
    started = time.monotonic()
    error = refusal(server.url("/video.mp4"), s3, loopback_policy(read_timeout_seconds=0.2))

    # Then it times out promptly, transiently
    assert (error.code, error.permanent) == ("VIDEO_DOWNLOAD_TIMEOUT", False)
    assert time.monotonic() - started < 0.9


def test_a_slow_drip_meets_the_whole_download_deadline(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a server that never stalls long enough for a read timeout, but never finishes
    server.routes["/video.mp4"] = dribble(mp4[:64], pause_seconds=0.02, for_seconds=3.0)

    # When it is fetched with a 0.5 s deadline and a generous read timeout
    started = time.monotonic()
    error = refusal(
        server.url("/video.mp4"), s3, loopback_policy(timeout_seconds=0.5, read_timeout_seconds=5.0)
    )

    # Then the deadline ends it, transiently
    assert (error.code, error.permanent) == ("VIDEO_DOWNLOAD_TIMEOUT", False)
    assert time.monotonic() - started < 1.5


def test_a_storage_failure_is_transient(server: LoopbackServer, s3: Any, mp4: bytes) -> None:
    # Given a video and a bucket that does not exist
    server.routes["/video.mp4"] = answer(mp4)

    # When it is streamed there
    with pytest.raises(DownloadFailed) as excinfo:
        stream_video_to_s3(
            server.url("/video.mp4"),
            policy=loopback_policy(),
            s3=s3,
            bucket="no-such-bucket",
            key=KEY,
            metadata=METADATA,
        )

    # Then the failure is transient
    assert (excinfo.value.code, excinfo.value.permanent) == ("VIDEO_STORE_FAILED", False)


# --- memory ---------------------------------------------------------------------------------


class DiscardingS3:
    """An S3 stand-in that hashes what it is sent and keeps nothing, so that only the
    downloader's own buffers show up in a memory measurement. Parts upload concurrently:
    each waits for the one before it to be hashed, so the digest is the body's."""

    def __init__(self) -> None:
        self.part_sizes: list[int] = []
        self.digest = hashlib.sha256()
        self.completed = False
        self._turn = threading.Condition()
        self._next_part = 1

    def create_multipart_upload(self, **_: Any) -> dict[str, str]:
        return {"UploadId": "upload-1"}

    def upload_part(self, *, Body: bytearray, PartNumber: int, **_: Any) -> dict[str, str]:
        with self._turn:
            self._turn.wait_for(lambda: self._next_part == PartNumber, timeout=10)
            self.part_sizes.append(len(Body))
            self.digest.update(Body)
            self._next_part += 1
            self._turn.notify_all()
        return {"ETag": f'"{PartNumber}"', "ChecksumCRC32": "AAAAAA=="}

    def complete_multipart_upload(self, **_: Any) -> None:
        self.completed = True


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_memory_stays_a_few_parts_whatever_the_size(
    server: LoopbackServer, mp4: bytes, max_in_flight: int
) -> None:
    # Given a 40 MiB video generated on the fly, eight times the part size
    total = 40 * MiB
    block = os.urandom(256 * 1024)

    def pieces() -> Iterator[bytes]:
        yield mp4
        sent = len(mp4)
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            sent += len(piece)
            yield piece

    expected = hashlib.sha256()
    for piece in pieces():
        expected.update(piece)
    server.routes["/video.mp4"] = chunked(pieces)
    s3 = DiscardingS3()

    # When it is streamed while Python's allocations are traced
    tracemalloc.start()
    try:
        stored = download(
            server.url("/video.mp4"), s3, loopback_policy(max_bytes=total), max_in_flight=max_in_flight
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then every part but the last was exactly one part size, and the peak stayed near the
    # parts in flight plus the one filling
    assert stored.size == total
    assert s3.completed
    assert s3.digest.hexdigest() == stored.sha256 == expected.hexdigest()
    assert s3.part_sizes[:-1] == [PART_SIZE] * (len(s3.part_sizes) - 1)
    assert sum(s3.part_sizes) == total
    assert peak < (max_in_flight + 1) * PART_SIZE + 2 * MiB


# --- the rules, one function at a time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("fe80::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("2002:7f00:1::", True),
        ("2002:808:808::", True),
        ("64:ff9b::a00:1", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("2001::1", True),
        ("2001:db8::1", True),
        ("100::1", True),
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
    ],
)
def test_address_check(address: str, forbidden: bool) -> None:
    # Given an address a host name resolved to
    # When it is checked
    # Then only public unicast addresses pass; IPv4 inside IPv6 is judged as the IPv4
    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden


@pytest.mark.parametrize(
    ("host", "allowed_hosts", "allowed"),
    [
        ("cdn.example.com", ("cdn.example.com",), True),
        ("cdn.example.com", ("CDN.Example.com.",), True),
        ("a.cdn.example.com", ("cdn.example.com",), False),
        ("example.com", (".example.com",), True),
        ("a.b.example.com", (".example.com",), True),
        ("badexample.com", (".example.com",), False),
        ("example.com.evil.test", (".example.com",), False),
        ("anything.test", (".",), False),
        ("anything.test", ("",), False),
        ("anything.test", (), False),
    ],
)
def test_allow_list_matching(host: str, allowed_hosts: tuple[str, ...], allowed: bool) -> None:
    # Given a host and an allow-list
    # When they are matched
    # Then exact entries name one host, dotted entries a domain and its subdomains
    assert host_is_allowed(host, allowed_hosts) is allowed


# --- TLS material --------------------------------------------------------------------------------


class TlsPair:
    """A throwaway CA, a server certificate for "localhost" only, and a client trusting the CA."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i2v test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.client = ssl.create_default_context(
            cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        )
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load_server_chain(server_cert, server_key)

    def _load_server_chain(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        # ssl loads certificates from files only.
        with tempfile.TemporaryDirectory() as directory:
            cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
            with open(cert_path, "wb") as cert_file:
                cert_file.write(cert.public_bytes(serialization.Encoding.PEM))
            with open(key_path, "wb") as key_file:
                key_file.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            self.server.load_cert_chain(cert_path, key_path)


@pytest.fixture(scope="module")
def tls() -> TlsPair:
    return TlsPair()


def test_a_certificate_for_another_name_is_refused(s3: Any, mp4: bytes, tls: TlsPair) -> None:
    # Given an HTTPS server whose certificate names "localhost", reached as 127.0.0.1
    https = LoopbackServer(tls=tls.server)
    https.routes["/video.mp4"] = answer(mp4)
    try:
        # When the video is fetched
        error = refusal(https.url("/video.mp4", scheme="https"), s3, ssl_context=tls.client)
    finally:
        https.close()

    # Then the TLS check fails (transient: certificates get fixed) and nothing is stored
    assert (error.code, error.permanent) == ("VIDEO_DOWNLOAD_ERROR", False)
    assert https.requested_paths == []
    assert_nothing_stored(s3)
