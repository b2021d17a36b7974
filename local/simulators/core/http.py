"""HTTP for the simulators: the request a route gets and the reply it gives, JSON helpers,
the API key check, and the `http.server` plumbing that hands each request to a simulator."""

from __future__ import annotations

import hmac
import json
import logging
import shutil
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeGuard
from urllib.parse import parse_qs, urlsplit

from local.simulators.core.chaos import DRIP, HANG, RESET, TRUNCATE, WireFault

HTTP_TIMEOUT_SECONDS = 10.0  # of the simulators' own calls: image fetches and webhooks
REQUEST_BODY_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """One request as a route's `route()` gets it."""

    method: str
    path: str  # without the query string
    query: Mapping[str, list[str]]  # every value of each parameter, blank ones kept
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def param(self, name: str) -> str | None:
        """The first value of query parameter `name`, or None when it is absent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    file: Path | None = None
    wire_fault: WireFault | None = None  # how the answer goes wrong on the wire (fault injection)


def json_reply(
    status: int,
    payload: object,
    *,
    content_type: str = "application/json",
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    return Reply(status, json.dumps(payload).encode(), content_type, headers)


def retry_after_header(retry_after: int | None) -> tuple[tuple[str, str], ...]:
    """The `Retry-After` header of an error reply, none when `retry_after` is None."""
    return (("Retry-After", str(retry_after)),) if retry_after is not None else ()


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body, or None when it is not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ApiKey:
    """The key a route's clients must send, compared in constant time."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the API key must not be empty")
        self._key = key.encode()

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._key)

    def matches_bearer(self, authorization: str) -> bool:
        """Whether an `Authorization` value is `Bearer <key>` (the scheme in any case)."""
        scheme, _, key = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.matches(key.strip())


# -- the server ---------------------------------------------------------------------------------


class HttpApp(Protocol):
    """What the server needs of the simulator it serves."""

    TITLE: ClassVar[str]
    BODY_MAX_BYTES: ClassVar[int]
    logger: logging.Logger

    def handle(self, request: HttpRequest) -> Reply: ...

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply: ...


class HttpServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server answering every request with `app.handle()`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: HttpApp) -> None:
        super().__init__(address, _RequestHandler)
        self.app = app


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return f"{self._app().TITLE}Simulator/1.0 {self.sys_version}"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _app(self) -> HttpApp:
        assert isinstance(self.server, HttpServer)
        return self.server.app

    def _serve(self, method: str) -> None:
        started = time.monotonic()
        app = self._app()
        target = urlsplit(self.path)
        path = target.path
        length = int(self.headers.get("content-length") or 0)
        if length > app.BODY_MAX_BYTES:
            self.close_connection = True
            reply = app.error_reply(413)
        else:
            request = HttpRequest(
                method=method,
                path=path,
                query=parse_qs(target.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            reply = app.handle(request)
        self._send(reply, include_body=method != "HEAD")
        # One line per request: no headers (API key), no query string (presigned URLs).
        app.logger.info(
            "%s %s -> %d (%.0f ms)", method, path, reply.status, (time.monotonic() - started) * 1000
        )

    def _send(self, reply: Reply, *, include_body: bool) -> None:
        fault = reply.wire_fault
        if fault is not None and fault.kind in (HANG, RESET):
            self._abort(fault)
            return
        length = reply.file.stat().st_size if reply.file else len(reply.body)
        declared = fault.declared_length if fault is not None and fault.declared_length else length
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(declared))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if not include_body:
            return
        try:
            if fault is not None:
                self._send_faulty(reply, fault)
            elif reply.file is not None:
                with reply.file.open("rb") as video:
                    shutil.copyfileobj(video, self.wfile)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _abort(self, fault: WireFault) -> None:
        """No answer at all: a reset now, or silence for `fault.seconds`, then the close."""
        self.close_connection = True
        if fault.kind == RESET:
            # Linger 0: closing the socket sends a TCP RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            time.sleep(fault.seconds)

    def _send_faulty(self, reply: Reply, fault: WireFault) -> None:
        body = reply.file.read_bytes() if reply.file is not None else reply.body
        if fault.kind == TRUNCATE:
            self.wfile.write(body[: fault.cut_at])
            self.close_connection = True
        elif fault.kind == DRIP:
            chunks = 20
            step = max(1, -(-len(body) // chunks))
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                self.wfile.flush()
                time.sleep(fault.seconds / chunks)
        else:
            raise ValueError(f"unknown wire fault {fault.kind!r}")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_serve` writes the request line itself, without the query string."""

    def log_message(self, format: str, *args: Any) -> None:
        self._app().logger.warning("http: " + format, *args)
