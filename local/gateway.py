"""An HTTP API (API Gateway v2) on loopback: requests become payload 2.0 events.

Routes come from the functions' HttpApi events in the template. A request no route
matches gets API Gateway's `404 {"message":"Not Found"}`; a function that fails gets
`500 {"message":"Internal Server Error"}`; one that outlasts the integration timeout gets
`503 {"message":"Service Unavailable"}` while it keeps running, as on AWS. Every
request is recorded (method, target, headers, body, answer) so tests can replay one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.dispatcher import Invocable
from local.lambda_runtime import FunctionError

log = logging.getLogger(__name__)

# API Gateway's payload limit and HTTP APIs' longest integration timeout.
MAX_BODY_BYTES = 10 * 1024 * 1024
INTEGRATION_TIMEOUT_SECONDS = 30.0
RECORDED_REQUESTS = 1000
_PARAMETER = re.compile(r"^\{([^}+]+)(\+?)\}$")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: Invocable

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def _pattern(self) -> re.Pattern[str]:
        # {name} takes one path segment, {name+} the rest of the path.
        parts = []
        for segment in self.path.strip("/").split("/"):
            placeholder = _PARAMETER.match(segment)
            if placeholder is None:
                parts.append(re.escape(segment))
            else:
                parts.append(f"(?P<{placeholder.group(1)}>{'.+' if placeholder.group(2) else '[^/]+'})")
        return re.compile("/" + "/".join(parts))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when this route takes the request, else None."""
        found = self._pattern.fullmatch(path) if self.method in (method, "ANY") else None
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}

    @property
    def specificity(self) -> tuple[int, int]:
        """API Gateway prefers routes with more literal segments, then longer ones."""
        segments = self.path.strip("/").split("/")
        literal = sum(1 for segment in segments if not _PARAMETER.match(segment))
        return literal, len(segments)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived, with the status it got."""

    received_at: float
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int
    route_key: str | None


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: Mapping[str, str]
    cookies: Sequence[str]
    body: bytes


def http_api_event(
    *,
    route: Route,
    path_parameters: Mapping[str, str],
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    api_id: str,
    account_id: str,
    now: float,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload format 2.0 event."""
    parts = urlsplit(target)
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(cookie.strip() for cookie in value.split(";") if cookie.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    request_id = base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("=")
    domain = joined.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": joined,
        "requestContext": {
            "accountId": account_id,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def gateway_response(result: Any) -> GatewayResponse:
    """A function's result as API Gateway turns it into an HTTP response (format 2.0).

    A result without `statusCode` is taken as a JSON body of a 200, as HTTP APIs infer.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        inferred = result if isinstance(result, str) else json.dumps(result)
        return GatewayResponse(200, {"content-type": "application/json"}, [], inferred.encode())
    raw_body = result.get("body") or ""
    try:
        body = (
            base64.b64decode(raw_body, validate=True)
            if result.get("isBase64Encoded")
            else str(raw_body).encode()
        )
    except binascii.Error:
        return _error_response(500, "Internal Server Error")
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name).lower()] = ",".join(str(value) for value in values)
    return GatewayResponse(
        int(result["statusCode"]), headers, [str(c) for c in result.get("cookies") or []], body
    )


def _error_response(status: int, message: str) -> GatewayResponse:
    body = json.dumps({"message": message}).encode()
    return GatewayResponse(status, {"content-type": "application/json"}, [], body)


class HttpApiGateway:
    """The server binds at construction (so its URL can go into the functions' settings);
    `start()` serves the routes added by then."""

    def __init__(
        self,
        *,
        api_id: str,
        account_id: str,
        integration_timeout_seconds: float = INTEGRATION_TIMEOUT_SECONDS,
    ) -> None:
        self.api_id = api_id
        self.account_id = account_id
        self.integration_timeout_seconds = integration_timeout_seconds
        self._routes: list[Route] = []
        self._recorded: deque[RecordedRequest] = deque(maxlen=RECORDED_REQUESTS)
        self._invocations: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_route(self, method: str, path: str, function: Invocable) -> None:
        self._routes.append(Route(method.upper(), path, function))
        self._routes.sort(key=lambda route: route.specificity, reverse=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving; wait up to `timeout` s for invocations still running."""
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        self._server.server_close()
        with self._lock:
            running = list(self._invocations)
        for invocation in running:
            invocation.join(max(0.0, deadline - time.monotonic()))

    def requests(self, path_prefix: str = "") -> list[RecordedRequest]:
        """The recorded requests whose path starts with `path_prefix`, oldest first."""
        with self._lock:
            recorded = list(self._recorded)
        return [r for r in recorded if urlsplit(r.target).path.startswith(path_prefix)]

    def handle(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> GatewayResponse:
        received_at = time.time()
        path = urlsplit(target).path
        matched = next(
            (
                (route, parameters)
                for route in self._routes
                if (parameters := route.match(method, path)) is not None
            ),
            None,
        )
        if matched is None:
            response = _error_response(404, "Not Found")
        elif len(body) > MAX_BODY_BYTES:
            response = _error_response(413, "Request Entity Too Large")
        else:
            route, parameters = matched
            event = http_api_event(
                route=route,
                path_parameters=parameters,
                method=method,
                target=target,
                headers=headers,
                body=body,
                source_ip=source_ip,
                api_id=self.api_id,
                account_id=self.account_id,
                now=received_at,
            )
            response = self._invoke(route.function, event)
        with self._lock:
            self._recorded.append(
                RecordedRequest(
                    received_at=received_at,
                    method=method,
                    target=target,
                    headers=tuple(headers),
                    body=body,
                    status=response.status,
                    route_key=matched[0].route_key if matched else None,
                )
            )
        return response

    def _invoke(self, function: Invocable, event: dict[str, Any]) -> GatewayResponse:
        answer: list[GatewayResponse] = []

        def run() -> None:
            try:
                answer.append(gateway_response(function.invoke(event)))
            except FunctionError as error:
                log.warning("%s failed: %s", function.name, error)
                answer.append(_error_response(500, "Internal Server Error"))
            finally:
                with self._lock:
                    self._invocations.discard(threading.current_thread())

        # The function runs on its own thread: past the integration timeout the caller
        # gets its 503 while the function goes on, as on AWS.
        invocation = threading.Thread(target=run, name=f"invoke-{function.name}", daemon=True)
        with self._lock:
            self._invocations.add(invocation)
        invocation.start()
        invocation.join(self.integration_timeout_seconds)
        if not answer:
            return _error_response(503, "Service Unavailable")
        return answer[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: HttpApiGateway) -> None:
        super().__init__(address, _RequestHandler)
        self.gateway = gateway


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(_error_response(413, "Request Entity Too Large"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        response = self.server.gateway.handle(
            self.command, self.path, list(self.headers.items()), body, self.client_address[0]
        )
        self._send(response)

    def _send(self, response: GatewayResponse) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        headers.setdefault("content-type", "application/json")
        headers["apigw-requestid"] = base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("=")
        for name, value in headers.items():
            if name not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        for cookie in response.cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Callback URLs carry tokens: no access log.
        pass
