"""Hostile video URLs for the SSRF-guarded fetch (i2v/media/fetch.py), with the production
guards on: https only, no private networks.

Each case names its own host in the allow-list, so what stops it is the address, scheme or
form check, not the list. Nothing may connect: a loopback server counts every TCP
connection it is offered, and every connect the fetch's socket backend makes is recorded.
Redirects come from a real TLS server on 127.0.0.2, the one address the tests exempt from
the guard (every other address is judged by the production `is_forbidden_address`); names
resolve through the fetch's own resolver (`socket.getaddrinfo`), injected per test.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from i2v.errors import DownloadFailed
from i2v.media import fetch
from i2v.media.fetch import DownloadPolicy, open_video

pytestmark = pytest.mark.timeout(60)

REDIRECTOR = "127.0.0.2"  # the test's own server: the one address exempt from the guard
TEST_NAMES = ("redirector.test", "rebind.test", "cdn.example.com")
PRODUCTION_GUARD = fetch.is_forbidden_address
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


# -- servers ----------------------------------------------------------------------------


class CountingServer:
    """Accepts TCP connections on loopback and counts them; answers nothing."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@dataclass
class Tls:
    """A self-signed certificate for the test names, and a client context trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def make(cls, folder: Path) -> Tls:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "adversarial test")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in TEST_NAMES]), critical=False)
            .sign(key, hashes.SHA256())
        )
        cert_file, key_file = folder / "cert.pem", folder / "key.pem"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        return cls(server=server, client=ssl.create_default_context(cafile=str(cert_file)))


class Redirector:
    """An HTTPS server on 127.0.0.2 that answers every GET with what `answer` says."""

    def __init__(self, tls: Tls, port: int = 0) -> None:
        self.answer: tuple[int, dict[str, str], bytes] = (200, {"content-type": "video/mp4"}, MP4)
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                status, headers, body = outer.answer
                self.send_response(status)
                for name, value in (
                    headers | {"content-length": str(len(body)), "connection": "close"}
                ).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((REDIRECTOR, port), Handler)
        self._http.socket = tls.server.wrap_socket(self._http.socket, server_side=True)
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def redirect_to(self, location: str, status: int = 302) -> None:
        self.answer = (status, {"location": location}, b"")

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@dataclass
class Network:
    """What the fetch did on the network during a test."""

    resolved: list[str] = field(default_factory=list)
    connected: list[tuple[str, int]] = field(default_factory=list)
    names: dict[str, list[list[str]]] = field(default_factory=dict)
    """Injected DNS: each lookup of a name pops its next answer (the last one repeats)."""


@pytest.fixture(scope="module")
def tls() -> Iterator[Tls]:
    with tempfile.TemporaryDirectory() as folder:
        yield Tls.make(Path(folder))


@pytest.fixture(scope="module")
def loopback() -> Iterator[CountingServer]:
    server = CountingServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture(scope="module")
def loopback6() -> Iterator[CountingServer | None]:
    try:
        server = CountingServer("::1")
    except OSError:  # no IPv6 on this machine: the IPv6 cases still must not connect
        yield None
        return
    yield server
    server.close()


@pytest.fixture(scope="module")
def redirector(tls: Tls, loopback: CountingServer) -> Iterator[Redirector]:
    # The same port as the counting server, on another loopback address: a rebinding to
    # 127.0.0.1 would reach the counter.
    server = Redirector(tls, port=loopback.port)
    yield server
    server.close()


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Iterator[Network]:
    record = Network()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = httpcore.SyncBackend.connect_tcp
    real_forbidden = fetch.is_forbidden_address

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_address(str(host)):  # the socket layer "resolves" the vetted literal again
            record.resolved.append(str(host))
        answers = record.names.get(str(host))
        if answers is None:
            return real_getaddrinfo(host, port, *args, **kwargs)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        record.connected.append((host, port))
        return real_connect(self, host, port, *args, **kwargs)

    def forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address != ipaddress.ip_address(REDIRECTOR) and real_forbidden(address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    monkeypatch.setattr(fetch, "is_forbidden_address", forbidden)
    yield record


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def production_policy(*hosts: str) -> DownloadPolicy:
    """The deployed defaults (https only, no private networks), with `hosts` allowed."""
    return DownloadPolicy(
        allowed_hosts=hosts, max_bytes=10 * 1024 * 1024, timeout_seconds=5, read_timeout_seconds=2
    )


def refusal(url: str, policy: DownloadPolicy, tls: Tls) -> DownloadFailed:
    with pytest.raises(DownloadFailed) as raised, open_video(url, policy, ssl_context=tls.client) as body:
        for _ in body:
            pass
    return raised.value


def host_of(url: str) -> str:
    """The host as the allow-list compares it (IP addresses in their canonical form)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


# -- direct URLs ------------------------------------------------------------------------

# (URL with {port}, the code it must be refused with)
FORBIDDEN_ADDRESSES = {
    "loopback": "https://127.0.0.1:{port}/v.mp4",
    "loopback, another address": "https://127.1.2.3:{port}/v.mp4",
    "decimal": "https://2130706433:{port}/v.mp4",
    "hex": "https://0x7f.1:{port}/v.mp4",
    "hex, one number": "https://0x7f000001:{port}/v.mp4",
    "octal": "https://0177.0.0.1:{port}/v.mp4",
    "short": "https://127.1:{port}/v.mp4",
    "localhost": "https://localhost:{port}/v.mp4",
    "localhost, upper case and a trailing dot": "https://LOCALHOST.:{port}/v.mp4",
    "unspecified": "https://0.0.0.0:{port}/v.mp4",
    "private 10/8": "https://10.0.0.1:{port}/v.mp4",
    "private 172.16/12": "https://172.16.0.1:{port}/v.mp4",
    "private 192.168/16": "https://192.168.1.1:{port}/v.mp4",
    "carrier-grade NAT": "https://100.64.0.1:{port}/v.mp4",
    "benchmarking": "https://198.18.0.1:{port}/v.mp4",
    "link-local metadata": "https://169.254.169.254:{port}/latest/meta-data/",
    "metadata, decimal": "https://2852039166:{port}/latest/meta-data/",
    "broadcast": "https://255.255.255.255:{port}/v.mp4",
    "multicast": "https://224.0.0.1:{port}/v.mp4",
    "reserved 240/4": "https://240.0.0.1:{port}/v.mp4",
    "IPv6 loopback": "https://[::1]:{port}/v.mp4",
    "IPv6 unspecified": "https://[::]:{port}/v.mp4",
    "IPv4-mapped, dotted": "https://[::ffff:127.0.0.1]:{port}/v.mp4",
    "IPv4-mapped, hex": "https://[::ffff:7f00:1]:{port}/v.mp4",
    "IPv4-mapped metadata": "https://[::ffff:169.254.169.254]:{port}/v.mp4",
    "IPv4-compatible (deprecated)": "https://[::127.0.0.1]:{port}/v.mp4",
    "unique-local": "https://[fd00::1]:{port}/v.mp4",
    "AWS metadata over IPv6": "https://[fd00:ec2::254]:{port}/latest/meta-data/",
    "link-local IPv6": "https://[fe80::1]:{port}/v.mp4",
    "site-local IPv6 (deprecated, still routed inside some networks)": "https://[fec0::1]:{port}/v.mp4",
    "NAT64 of loopback": "https://[64:ff9b::7f00:1]:{port}/v.mp4",
    "NAT64 of metadata": "https://[64:ff9b::a9fe:a9fe]:{port}/v.mp4",
    "local-use NAT64": "https://[64:ff9b:1::a00:1]:{port}/v.mp4",
    "6to4 of loopback": "https://[2002:7f00:1::]:{port}/v.mp4",
    "6to4 of a public address": "https://[2002:808:808::]:{port}/v.mp4",
    "Teredo": "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/v.mp4",
    "documentation IPv6": "https://[2001:db8::1]:{port}/v.mp4",
}


@pytest.mark.parametrize("name", FORBIDDEN_ADDRESSES)
def test_urls_that_reach_a_non_public_address_are_never_fetched(
    name: str, tls: Tls, network: Network, loopback: CountingServer, loopback6: CountingServer | None
) -> None:
    # Given a URL whose host (allowed by name) reaches something that is not the internet
    url = FORBIDDEN_ADDRESSES[name].format(port=loopback.port)
    # When it is fetched under the production policy
    failure = refusal(url, production_policy(host_of(url)), tls)
    # Then it is refused for good, for its address, and nothing was connected to
    assert (failure.code, failure.permanent) == ("VIDEO_ADDRESS_FORBIDDEN", True), failure.message
    assert network.connected == []
    assert loopback.connections == 0
    assert loopback6 is None or loopback6.connections == 0


@pytest.mark.parametrize(
    "answers",
    [
        ["10.0.0.5"],
        ["fd12:3456::1"],
        ["8.8.8.8", "127.0.0.1"],
        ["2606:4700::1111", "::1"],
        ["169.254.169.254"],
    ],
    ids=["private", "unique-local", "public and loopback", "public and IPv6 loopback", "metadata"],
)
def test_a_name_that_resolves_to_any_non_public_address_is_never_fetched(
    answers: list[str], tls: Tls, network: Network, loopback: CountingServer
) -> None:
    # Given an allowed CDN name whose DNS answer holds a non-public address (among others)
    network.names["cdn.example.com"] = [answers]
    # When its video is fetched
    failure = refusal(
        f"https://cdn.example.com:{loopback.port}/v.mp4", production_policy("cdn.example.com"), tls
    )
    # Then it is refused before any connection, to any of the addresses
    assert failure.code == "VIDEO_ADDRESS_FORBIDDEN"
    assert network.connected == []


URLS_REFUSED_BY_FORM = {
    "plain http": "http://cdn.example.com/v.mp4",
    "file": "file:///etc/passwd",
    "file with a host": "file://cdn.example.com/etc/passwd",
    "ftp": "ftp://cdn.example.com/v.mp4",
    "gopher": "gopher://cdn.example.com:6379/_INFO",
    "data": "data:video/mp4;base64,AAAAGGZ0eXBpc29t",
    "javascript": "javascript:alert(1)",
    "dict": "dict://cdn.example.com:11211/stats",
    "ldap": "ldap://cdn.example.com/",
    "websocket": "wss://cdn.example.com/v.mp4",
    "no scheme": "//cdn.example.com/v.mp4",
    "credentials": "https://user:pass@cdn.example.com/v.mp4",
    "a user only": "https://user@cdn.example.com/v.mp4",
    "an allowed name as the user": "https://cdn.example.com@127.0.0.1/v.mp4",
    "a backslash before the at sign": "https://cdn.example.com\\@127.0.0.1/v.mp4",
    "a port out of range": "https://cdn.example.com:99999/v.mp4",
    "no host": "https:///v.mp4",
    "full-width letters": "https://\uff43\uff44\uff4e.example.com/v.mp4",
    "a percent-encoded host": "https://cdn%2eexample.com/v.mp4",
    "a zone id": "https://[fe80::1%25eth0]/v.mp4",
}


@pytest.mark.parametrize("name", URLS_REFUSED_BY_FORM)
def test_urls_of_another_scheme_or_form_are_never_fetched(name: str, tls: Tls, network: Network) -> None:
    # Given a URL that is not a plain https URL to an allowed host
    url = URLS_REFUSED_BY_FORM[name]
    # When it is fetched, Then it is refused for good before any lookup or connection
    failure = refusal(url, production_policy("cdn.example.com"), tls)
    assert failure.permanent, failure.message
    assert failure.code in {"VIDEO_URL_NOT_ALLOWED", "VIDEO_HOST_NOT_ALLOWED", "VIDEO_ADDRESS_FORBIDDEN"}
    assert network.resolved == [] or failure.code == "VIDEO_ADDRESS_FORBIDDEN"
    assert network.connected == []


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com.evil.test/v.mp4",
        "https://evilexample.com/v.mp4",
        "https://example.com.evil.test/v.mp4",
        "https://cdn.example.com#@evil.test/v.mp4",
    ],
)
def test_names_that_only_look_allowed_are_never_fetched(url: str, tls: Tls, network: Network) -> None:
    # Given an allow-list of ".example.com" and a fragment trick the parser must not fall for
    network.names["cdn.example.com"] = [["127.0.0.1"]]  # what an attacker's DNS would say
    failure = refusal(url, production_policy(".example.com"), tls)
    assert failure.permanent and failure.code in {"VIDEO_HOST_NOT_ALLOWED", "VIDEO_ADDRESS_FORBIDDEN"}
    assert network.connected == []


# -- redirects --------------------------------------------------------------------------


REDIRECT_TARGETS = {
    "loopback": "https://127.0.0.1:{port}/v.mp4",
    "decimal loopback": "https://2130706433:{port}/v.mp4",
    "hex loopback": "https://0x7f.1:{port}/v.mp4",
    "octal loopback": "https://0177.0.0.1:{port}/v.mp4",
    "short loopback": "https://127.1:{port}/v.mp4",
    "localhost": "https://localhost:{port}/v.mp4",
    "metadata": "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "IPv6 loopback": "https://[::1]:{port}/v.mp4",
    "IPv4-mapped loopback": "https://[::ffff:7f00:1]:{port}/v.mp4",
    "NAT64 loopback": "https://[64:ff9b::7f00:1]:{port}/v.mp4",
    "unique-local": "https://[fd00::1]:{port}/v.mp4",
    "private": "https://10.0.0.1:{port}/v.mp4",
    "plain http to loopback": "http://127.0.0.1:{port}/v.mp4",
    "plain http to the same host": "http://redirector.test:{port}/v.mp4",
    "file": "file:///etc/passwd",
    "gopher": "gopher://127.0.0.1:{port}/_x",
    "credentials": "https://user:pass@127.0.0.1:{port}/v.mp4",
    "a protocol-relative loopback": "//127.0.0.1:{port}/v.mp4",
}


@pytest.mark.parametrize("name", REDIRECT_TARGETS)
@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_a_forbidden_place_is_never_followed(
    name: str,
    status: int,
    tls: Tls,
    network: Network,
    redirector: Redirector,
    loopback: CountingServer,
) -> None:
    # Given an allowed HTTPS host that redirects to a forbidden place (allowed by name too)
    network.names["redirector.test"] = [[REDIRECTOR]]
    target = REDIRECT_TARGETS[name].format(port=loopback.port)
    redirector.redirect_to(target, status)
    policy = production_policy("redirector.test", host_of(target) or "127.0.0.1")
    # When the video is fetched
    failure = refusal(f"https://redirector.test:{redirector.port}/v.mp4", policy, tls)
    # Then the redirect is refused for good, and the only connection was the first hop's
    assert failure.permanent, failure.message
    assert failure.code in {"VIDEO_ADDRESS_FORBIDDEN", "VIDEO_URL_NOT_ALLOWED"}
    assert network.connected == [(REDIRECTOR, redirector.port)]
    assert loopback.connections == 0


def test_the_address_checked_is_the_address_connected_to(
    tls: Tls, network: Network, redirector: Redirector, loopback: CountingServer
) -> None:
    # Given a name whose DNS answers a vetted address once, then loopback (a rebinding attack;
    # the loopback counter listens on the same port)
    network.names["rebind.test"] = [[REDIRECTOR], ["127.0.0.1"]]
    redirector.answer = (200, {"content-type": "video/mp4"}, MP4)
    # When the video is fetched
    with open_video(
        f"https://rebind.test:{redirector.port}/v.mp4",
        production_policy("rebind.test"),
        ssl_context=tls.client,
    ) as body:
        received = b"".join(body)
    # Then the name was resolved once, and the connection went to the address that was checked
    assert received == MP4
    assert network.resolved == ["rebind.test"]
    assert network.connected == [(REDIRECTOR, redirector.port)]
    assert loopback.connections == 0


def test_each_redirect_hop_is_resolved_and_checked_again(
    tls: Tls, network: Network, redirector: Redirector, loopback: CountingServer
) -> None:
    # Given a host that redirects to itself, whose DNS has turned to loopback by the second hop
    network.names["rebind.test"] = [[REDIRECTOR], ["127.0.0.1"]]
    redirector.redirect_to(f"https://rebind.test:{redirector.port}/second.mp4")
    # When the video is fetched
    failure = refusal(f"https://rebind.test:{redirector.port}/v.mp4", production_policy("rebind.test"), tls)
    # Then the second hop is refused for its new address, and never connected to
    assert failure.code == "VIDEO_ADDRESS_FORBIDDEN"
    assert network.resolved == ["rebind.test", "rebind.test"]
    assert network.connected == [(REDIRECTOR, redirector.port)]
    assert loopback.connections == 0


def test_without_the_exemption_the_redirector_itself_is_refused(
    tls: Tls, redirector: Redirector, loopback: CountingServer
) -> None:
    """The rig's own check: the production guard refuses the redirector's address too, so the
    cases above pass through one deliberate hole and prove the guard everywhere else."""
    assert PRODUCTION_GUARD(ipaddress.ip_address(REDIRECTOR))
    failure = refusal(f"https://{REDIRECTOR}:{redirector.port}/v.mp4", production_policy(REDIRECTOR), tls)
    assert failure.code == "VIDEO_ADDRESS_FORBIDDEN"
    assert redirector.requests == [] or all(not r.startswith("/v.mp4?") for r in redirector.requests)
