"""Fetch a video from an untrusted URL: the SSRF-guarded download every provider route uses.

The URL arrives in a provider webhook, so it is treated as hostile: https only, an
allow-listed host, no credentials in it, every redirect hop checked again, and no
connection to a private, loopback, link-local or otherwise non-global address. The host
is resolved here and the connection goes to the very address that was checked (no DNS
rebinding between check and connect), while TLS still verifies the certificate against
the host name. One deadline covers the whole download and every single connect, read or
write has its own timeout. The answer must be a 200 with an MP4 (or generic) content type
and a declared length within the cap; the body must open with an MP4 `ftyp` box and is
cut off as soon as it passes the cap.

    with open_video(url, policy) as body:
        for chunk in body:          # guarded: cap, signature, hashed on the fly
            ...
        body.size, body.sha256      # once the body has been read to its end

Failures raise DownloadFailed. `permanent` means no retry can help (the URL or its
content is unacceptable); anything else is left to a later attempt. A 4xx answer is
transient on purpose: the provider signs its video URLs and can hand out a fresh one
through its status endpoint, which is what the reconciler does, and finalize attempts
are capped, so a dead URL cannot loop forever.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import socket
import ssl
import string
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, urljoin, urlsplit

import certifi
import httpcore

from i2v.domain import Frozen
from i2v.errors import DownloadFailed

VIDEO_CONTENT_TYPE = "video/mp4"

# Generic types under which CDNs and object stores serve any file; accepted only with
# an MP4 signature in the body (checked for every type anyway).
_GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Answers no fresh URL or later attempt can change: the request itself is refused.
_PERMANENT_HTTP_STATUSES = frozenset({405, 414, 451})
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_MP4_SIGNATURE_END = 8  # an ISO-BMFF file opens with a box: size (4), type "ftyp" (4)
_HOST_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "-._")
# Characters kept as they are when a path is percent-encoded: URL delimiters and escapes.
_URL_SAFE_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"


class DownloadPolicy(Frozen):
    allowed_hosts: tuple[str, ...]
    """"cdn.example.com" is that host only; ".example.com" is that domain and its subdomains."""
    allow_http: bool = False
    allow_private_networks: bool = False
    max_bytes: int
    timeout_seconds: float
    """Deadline for the whole download, redirects included. Reads wait while the consumer
    (the S3 upload) is behind, so a slow store counts against it too."""
    read_timeout_seconds: float = 30.0
    """Longest wait for any single connect, read or write."""
    max_redirects: int = 3


@contextlib.contextmanager
def open_video(
    url: str, policy: DownloadPolicy, *, ssl_context: ssl.SSLContext | None = None
) -> Iterator[VideoBody]:
    """The checked answer for `url` under `policy`, its body ready to be iterated.

    Raises DownloadFailed, here for the URL, the redirects and the answer's status and
    headers, and while the body is iterated for its size, signature, network failures and
    the deadline. Network failures raised anywhere in the `with` block (say, by a reader
    thread that iterates the body) become DownloadFailed too; the connection is closed
    when the block ends.
    """
    deadline = time.monotonic() + policy.timeout_seconds
    backend = _GuardedBackend(policy, deadline)
    context = ssl_context or _default_ssl_context()
    with (
        _network_errors_as_download_failed(),
        httpcore.ConnectionPool(ssl_context=context, network_backend=backend) as pool,
    ):
        response, origin = _get_following_redirects(pool, url, policy)
        try:
            _check_response(response, origin, policy)
            declared = _header(response, b"content-length")
            yield VideoBody(response.iter_stream(), policy, int(declared) if declared.isdigit() else None)
        finally:
            response.close()


class VideoBody:
    """The body of a checked answer, once through: each chunk is counted against the cap
    and hashed before it is handed out, and nothing is handed out before the first bytes
    have shown the MP4 signature."""

    def __init__(
        self, chunks: Iterable[bytes], policy: DownloadPolicy, declared_size: int | None = None
    ) -> None:
        self._chunks = chunks
        self.declared_size = declared_size  # the Content-Length, if any: a hint, never trusted
        self._max_bytes = policy.max_bytes
        self._digest = hashlib.sha256()
        self._size = 0
        self._complete = False
        self._started = False

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a video body can be read only once")
        self._started = True
        head: bytes | None = b""  # held back until the signature is known
        for chunk in self._chunks:
            if not chunk:
                continue
            self._size += len(chunk)
            if self._size > self._max_bytes:
                raise _too_large(self._max_bytes, f"more than {self._max_bytes} bytes received")
            self._digest.update(chunk)
            if head is None:
                yield chunk
                continue
            head += chunk
            if len(head) >= _MP4_SIGNATURE_END:
                _check_mp4_signature(head)
                yield head
                head = None
        if head is not None:  # the whole body is shorter than a signature
            _check_mp4_signature(head)
            yield head
        self._complete = True

    @property
    def size(self) -> int:
        """Bytes received so far; the body's length once it has been read to its end."""
        return self._size

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the whole body, known once it has been read to its end."""
        if not self._complete:
            raise RuntimeError("the video body has not been read to its end")
        return self._digest.hexdigest()


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a connection to this address could reach something that is not the internet.

    `is_global` alone lets multicast through and judges the IPv6 forms that carry an IPv4
    address by their prefix, differently across Python versions; those forms are judged
    here by the IPv4 address they actually reach.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_forbidden_address(address.ipv4_mapped)
        if address in _NAT64_PREFIX:  # DNS64 answers in IPv6-only networks
            return is_forbidden_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:  # deprecated relays to an IPv4 we cannot vet
            return True
        if address.is_site_local:  # deprecated fec0::/10, which `is_global` lets through
            return True
    return not address.is_global or address.is_multicast or address.is_reserved


def host_is_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether `host` (lower case, no trailing dot) matches an allow-list entry."""
    for entry in allowed_hosts:
        allowed = entry.strip().lower().rstrip(".")
        if allowed.startswith("."):
            if allowed != "." and (host == allowed[1:] or host.endswith(allowed)):
                return True
        elif allowed and host == allowed:
            return True
    return False


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # The CA bundle httpx itself trusts, the same on a laptop and in Lambda.
    return ssl.create_default_context(cafile=certifi.where())


# --- URL and redirects -------------------------------------------------------------


def _get_following_redirects(
    pool: httpcore.ConnectionPool, url: str, policy: DownloadPolicy
) -> tuple[httpcore.Response, str]:
    """The first answer that is not a redirect, and the origin that gave it."""
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = _vetted_url(current, policy)
        response = pool.handle_request(_build_request(target, policy))
        if response.status not in _REDIRECT_STATUSES:
            return response, target.origin
        response.close()
        location = _header(response, b"location")
        if not location:
            raise DownloadFailed(
                f"{target.origin} answered {response.status} without a Location",
                permanent=False,
                code="VIDEO_UNAVAILABLE",
            )
        current = urljoin(current, location)
    raise DownloadFailed(
        f"the video URL redirects more than {policy.max_redirects} times",
        permanent=True,
        code="VIDEO_TOO_MANY_REDIRECTS",
    )


class _Target(NamedTuple):
    """A vetted URL, split the way the request needs it."""

    scheme: str
    host: str
    port: int | None
    path_and_query: str

    @property
    def origin(self) -> str:
        """The URL without path and query, which may carry a signature: fit for messages."""
        return f"{self.scheme}://{self.host}"


def _vetted_url(url: str, policy: DownloadPolicy) -> _Target:
    """The parsed URL, if its scheme, form and host are allowed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise _url_refused("the video URL is malformed") from None
    allowed_schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in allowed_schemes:
        raise _url_refused(
            f"the video URL scheme {parts.scheme!r} is not allowed; use " + " or ".join(allowed_schemes)
        )
    if "@" in parts.netloc:
        raise _url_refused("the video URL must not carry credentials")
    host = _normalized_host(parts.hostname)
    if not host_is_allowed(host, policy.allowed_hosts):
        raise DownloadFailed(
            f"the video host {host!r} is not in the allow-list",
            permanent=True,
            code="VIDEO_HOST_NOT_ALLOWED",
        )
    path_and_query = quote(parts.path or "/", safe=_URL_SAFE_CHARACTERS)
    if parts.query:
        path_and_query += "?" + quote(parts.query, safe=_URL_SAFE_CHARACTERS)
    return _Target(parts.scheme, host, port, path_and_query)


def _normalized_host(hostname: str | None) -> str:
    host = (hostname or "").rstrip(".")
    if not host:
        raise _url_refused("the video URL has no host")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    if not set(host) <= _HOST_CHARACTERS:
        raise _url_refused("the video URL host has characters a DNS name cannot have")
    return host


def _build_request(target: _Target, policy: DownloadPolicy) -> httpcore.Request:
    default_port = 443 if target.scheme == "https" else 80
    authority = f"[{target.host}]" if ":" in target.host else target.host
    if target.port is not None:
        authority = f"{authority}:{target.port}"
    per_step = min(policy.read_timeout_seconds, policy.timeout_seconds)
    return httpcore.Request(
        "GET",
        httpcore.URL(
            scheme=target.scheme,
            host=target.host,
            port=target.port or default_port,
            target=target.path_and_query,
        ),
        headers=[
            (b"Host", authority.encode("ascii")),
            (b"Accept", b"video/mp4, */*;q=0.1"),
            (b"Accept-Encoding", b"identity"),
            (b"User-Agent", b"i2v-video-fetch/1"),
        ],
        extensions={"timeout": {"connect": per_step, "read": per_step, "write": per_step, "pool": per_step}},
    )


def _url_refused(message: str) -> DownloadFailed:
    return DownloadFailed(message, permanent=True, code="VIDEO_URL_NOT_ALLOWED")


# --- response checks -----------------------------------------------------------------


def _check_response(response: httpcore.Response, origin: str, policy: DownloadPolicy) -> None:
    if response.status != 200:
        permanent = response.status in _PERMANENT_HTTP_STATUSES
        raise DownloadFailed(
            f"{origin} answered HTTP {response.status} for the video",
            permanent=permanent,
            code="VIDEO_UNAVAILABLE",
        )
    media_type = _header(response, b"content-type").split(";")[0].strip().lower()
    if media_type != VIDEO_CONTENT_TYPE and media_type not in _GENERIC_CONTENT_TYPES:
        raise DownloadFailed(
            f"the video URL serves {media_type or 'no content type'!r}, not {VIDEO_CONTENT_TYPE}",
            # An error page where the video should be (a CDN's, an expired link's) may
            # clear: the finalizer's retries are bounded and ask for a fresh URL.
            permanent=False,
            code="VIDEO_BAD_CONTENT_TYPE",
        )
    declared_length = _header(response, b"content-length")
    if declared_length.isdigit() and int(declared_length) > policy.max_bytes:
        raise _too_large(policy.max_bytes, f"{declared_length} bytes")


def _header(response: httpcore.Response, name: bytes) -> str:
    for header_name, value in response.headers:
        if header_name.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _check_mp4_signature(first_bytes: bytes | bytearray) -> None:
    if len(first_bytes) < _MP4_SIGNATURE_END or first_bytes[4:8] != b"ftyp":
        raise DownloadFailed(
            "the video URL serves something that is not an MP4 (no 'ftyp' box at the start)",
            permanent=False,
            code="VIDEO_BAD_CONTENT_TYPE",
        )


def _too_large(max_bytes: int, seen: str) -> DownloadFailed:
    return DownloadFailed(
        f"the video is over the {max_bytes}-byte cap ({seen})",
        permanent=True,
        code="VIDEO_TOO_LARGE",
    )


# --- network errors ------------------------------------------------------------------


@contextlib.contextmanager
def _network_errors_as_download_failed() -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as error:
        raise DownloadFailed(
            "the video download timed out", permanent=False, code="VIDEO_DOWNLOAD_TIMEOUT"
        ) from error
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as error:
        raise DownloadFailed(
            f"the video download failed: {type(error).__name__}: {error}",
            permanent=False,
            code="VIDEO_DOWNLOAD_ERROR",
        ) from error


# --- guarded network backend ---------------------------------------------------------


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves each host itself, refuses forbidden addresses, and connects to a checked
    address; every read and write waits at most until the download's deadline."""

    def __init__(self, policy: DownloadPolicy, deadline: float) -> None:
        self._policy = policy
        self._deadline = deadline
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _resolve(host, port)
        if not self._policy.allow_private_networks:
            for address in addresses:
                if is_forbidden_address(address):
                    raise DownloadFailed(
                        f"the video host {host!r} resolves to a non-public address",
                        permanent=True,
                        code="VIDEO_ADDRESS_FORBIDDEN",
                    )
        failures: list[httpcore.ConnectError | httpcore.ConnectTimeout] = []
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(
                    str(address),
                    port,
                    timeout=_within_deadline(timeout, self._deadline, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failures.append(error)
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failures[-1]  # _resolve returns at least one address

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("video downloads use TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from error
    addresses = [ipaddress.ip_address(sockaddr[0]) for _, _, _, _, sockaddr in found]
    if not addresses:
        raise httpcore.ConnectError(f"{host!r} resolves to no address")
    return list(dict.fromkeys(addresses))


def _within_deadline(
    timeout: float | None, deadline: float, expired: type[httpcore.TimeoutException]
) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired("the video download deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within_deadline(timeout, self._deadline, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within_deadline(timeout, self._deadline, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        secured = self._stream.start_tls(
            ssl_context,
            server_hostname,
            _within_deadline(timeout, self._deadline, httpcore.ConnectTimeout),
        )
        return _DeadlineStream(secured, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
