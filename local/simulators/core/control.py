"""The control API over HTTP, under /_sim/: faults, state, reset and forget."""

from __future__ import annotations

import re
from typing import Any, Protocol

from local.simulators.core.http import HttpRequest, Reply, json_reply, parse_json

CONTROL_PREFIX = "/_sim/"
_FORGET_PATH = re.compile(r"^/_sim/forget/([^/]+)$")


class Controllable(Protocol):
    """The simulator's Python control API, which these routes serve."""

    def set_faults(self, **changes: object) -> dict[str, Any]: ...

    def faults(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def forget(self, task_id: str) -> bool: ...

    def state(self) -> dict[str, Any]: ...

    def error_reply(self, status: int, *, retry_after: int | None = None) -> Reply: ...


def control_reply(simulator: Controllable, request: HttpRequest) -> Reply:
    """Answer a request under `CONTROL_PREFIX`: `GET` and `POST /_sim/faults`, `GET
    /_sim/state`, `POST /_sim/reset` and `POST /_sim/forget/{task_id}`."""
    method, path = request.method, request.path
    if (method, path) == ("POST", "/_sim/faults"):
        return _post_faults(simulator, request.body)
    if method == "POST" and (match := _FORGET_PATH.match(path)):
        return _post_forget(simulator, match.group(1))
    if (method, path) == ("POST", "/_sim/reset"):
        simulator.reset()
        return json_reply(200, simulator.state())
    if (method, path) == ("GET", "/_sim/faults"):
        return json_reply(200, {"faults": simulator.faults()})
    if (method, path) == ("GET", "/_sim/state"):
        return json_reply(200, simulator.state())
    return simulator.error_reply(404)


def _post_faults(simulator: Controllable, body: bytes) -> Reply:
    changes = parse_json(body)
    if not isinstance(changes, dict):
        return json_reply(400, {"message": "the body must be a JSON object of faults"})
    try:
        return json_reply(200, {"faults": simulator.set_faults(**changes)})
    except ValueError as exc:
        return json_reply(400, {"message": str(exc)})


def _post_forget(simulator: Controllable, task_id: str) -> Reply:
    if simulator.forget(task_id):
        return json_reply(200, {"forgotten": task_id})
    return json_reply(404, {"message": f"no task {task_id}"})
