"""What a route's module fills in: the class attributes and hooks of its wire format.

`Simulator` calls these; a route subclasses `Simulator` and implements them (see
docs/simulator.md, "What a route module implements").
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, ClassVar, Generic

from local.simulators.core.faults import Faults
from local.simulators.core.http import REQUEST_BODY_MAX_BYTES, HttpRequest, Reply
from local.simulators.core.tasks import R, SimTask, State


class WireFormat(Generic[R]):
    """A route's wire format: the hooks below, and the class attributes it sets."""

    ROUTE: ClassVar[str]  # module name, e.g. "magnific": logger, thread and server names
    TITLE: ClassVar[str]  # for people, e.g. "Magnific"
    STATUS_NAMES: ClassVar[Mapping[State, str]]  # the wire's name for each state
    IMAGE_MAX_BYTES: ClassVar[int]  # the fetch stops reading (or decoding) past this size
    FAULTS: ClassVar[type[Faults]] = Faults
    # Larger bodies answer 413; a route taking data: URLs makes room (`data_url_body_max`).
    BODY_MAX_BYTES: ClassVar[int] = REQUEST_BODY_MAX_BYTES

    def route(self, request: HttpRequest) -> Reply | None:
        """Answer a request to the route's API, or None when the path is not one of its.

        A create call goes to `self.submit(request, model)`; a status, poll or result read
        starts with `self.refused_status_read()`."""
        raise NotImplementedError

    def parse_request(self, body: object, request: HttpRequest) -> R | Reply:
        """The create body (JSON, or None when not JSON) as a request, or the error reply;
        `request` has the call's headers and query."""
        raise NotImplementedError

    def created_reply(self, task: SimTask[R]) -> Reply:
        """The answer to a create call that made `task` (taken while it is still CREATED)."""
        raise NotImplementedError

    def task_body(self, task: SimTask[R]) -> dict[str, Any]:
        """The task object as the route sends it (also the base of `task()` summaries)."""
        raise NotImplementedError

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply:
        """The route's error answer for an HTTP status (404, 405, 413, injected errors and
        the rate window's 429)."""
        raise NotImplementedError

    def check_image(self, data: bytes) -> None:
        """Apply the route's image rules; raise TaskFailed with the reason."""
        raise NotImplementedError

    def webhook_body(self, task: SimTask[R]) -> Mapping[str, Any] | None:
        """The webhook for the task's new state, or None when the route sends none for it."""
        return None

    def webhook_headers(self, webhook_id: str, body: str) -> dict[str, str]:
        """Headers of one delivery attempt (signed afresh for each attempt)."""
        return {"content-type": "application/json"}

    def listening_socket(self, sock: socket.socket) -> socket.socket:
        """The listening socket as the server will use it: a route serving HTTPS returns it
        wrapped (`ssl.SSLContext.wrap_socket(sock, server_side=True)`); as is by default."""
        return sock
