"""Hypothesis strategies for deliveries to the callback API, and the property they must keep.

A drawn request mixes, independently: the route in the path (each signed route, a polling
route, one that does not exist), the task id (the task's own, another task's, any text),
the token (right, another task's, any text, none), the headers (signed as the route signs,
signed then changed, stale, random, missing), and the body (a well-formed update with any
status and unknown fields of any JSON, including NaN, infinities and huge integers; any
JSON; any bytes; JSON nested thousands deep). Only a request whose every part is right is
authentic; every other must leave the task store, the bucket, the topic and the finalize
queue exactly as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.adversarial.callback_rig import CallbackRig, Delivery, SeededTask, Snapshot, fal_signer

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "callbacks.yaml"
OTHER_ROUTES = ("dashscope", "apiyi", "aimlapi", "no-such-route")
# Deterministic and bounded: the same examples every run, no example database.
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return document


def documented_statuses(document: dict[str, Any], route: str) -> set[int]:
    """The answers the description gives for a POST to route `route`'s callback URL."""
    paths = document["paths"]
    operation = paths.get(f"/callbacks/{route}/{{task_id}}", paths["/callbacks/{route}/{task_id}"])["post"]
    return {int(code) for code in operation["responses"]}


@dataclass(frozen=True)
class Drawn:
    delivery: Delivery
    authentic: bool

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        d = self.delivery
        return f"Drawn(authentic={self.authentic}, route={d.route!r}, task_id={d.task_id[:80]!r}, headers={d.headers!r}, body={d.body[:300]!r})"


# -- parts ------------------------------------------------------------------------------

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# What HTTP lets a header value be: no surrounding whitespace.
_header_values = _printable.map(str.strip)
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
STATUSES = {
    "magnific": ["CREATED", "IN_PROGRESS", "COMPLETED", "FAILED", "completed", ""],
    "fal": ["OK", "ERROR", "IN_PROGRESS", "ok"],
}


@st.composite
def bodies(draw: st.DrawFn, route: str, provider_task_id: str) -> bytes:
    kind = draw(st.sampled_from(["update", "update", "json", "bytes", "deep", "huge number"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=900, max_value=5000))
        return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    id_field = "task_id" if route != "fal" else "request_id"
    update: dict[str, Any] = {
        id_field: draw(st.sampled_from([provider_task_id, provider_task_id + "x"]) | st.text(max_size=20)),
        "status": draw(st.sampled_from(STATUSES.get(route, STATUSES["magnific"])) | st.text(max_size=12)),
    }
    if route == "fal":
        update["payload"] = draw(st.just({"video": {"url": "https://v3.fal.media/v.mp4"}}) | json_values)
    else:
        update["generated"] = draw(st.lists(st.text(max_size=40), max_size=2))
    update |= draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3))
    encoded = json.dumps(update).encode()
    if kind == "huge number":
        digits = draw(st.sampled_from([b"1e400", b"-1e400", b"9" * 5000, b"1" + b"0" * 400]))
        encoded = encoded[:-1] + b', "n": ' + digits + b"}"
    return encoded


@st.composite
def drawn_requests(draw: st.DrawFn, rig: CallbackRig, pool: dict[str, list[SeededTask]]) -> Drawn:
    """A request against the tasks of `pool` (per signed route, at least two each)."""
    task_route = draw(st.sampled_from(sorted(pool)))
    task, other = draw(st.permutations(pool[task_route]))[:2]
    url_route = draw(
        st.sampled_from([task_route, task_route, *sorted(set(pool) - {task_route}), *OTHER_ROUTES])
    )
    body = draw(bodies(task_route, task.provider_task_id))

    signing = draw(
        st.sampled_from(["signed", "signed", "signed", "wrong key", "changed", "stale", "random", "none"])
    )
    headers = _headers(draw, rig, task, body, signing)
    headers |= draw(
        st.dictionaries(
            st.sampled_from(["x-extra", "content-type", "user-agent"]), _header_values, max_size=2
        )
    )

    token_kind = draw(st.sampled_from(["right", "right", "right", "other", "random", "none"]))
    token = {"right": task.token, "other": other.token, "random": draw(_printable), "none": ""}[token_kind]
    query = None if token_kind != "none" else {}

    id_kind = draw(st.sampled_from(["own", "own", "own", "other", "text"]))
    task_id = {"own": task.task_id, "other": other.task_id, "text": draw(st.text(min_size=1, max_size=60))}[
        id_kind
    ]

    authentic = signing == "signed" and token_kind == "right" and id_kind == "own" and url_route == task_route
    return Drawn(Delivery(url_route, task_id, token, headers, body, query=query), authentic)


def _headers(
    draw: st.DrawFn, rig: CallbackRig, task: SeededTask, body: bytes, signing: str
) -> dict[str, str]:
    signer = rig.signer
    magnific = task.route == "magnific"
    if signing in ("signed", "changed"):
        headers = rig.signer.headers(task.route, body, task.provider_task_id)
        if signing == "changed":
            # content-type is not signed: changing it leaves the delivery authentic
            name = draw(st.sampled_from(sorted(set(headers) - {"content-type"})))
            headers[name] = draw(_header_values.filter(lambda value: value != headers[name]))
        return headers
    if signing == "wrong key":
        if magnific:
            return signer.magnific_headers(body, secret="whsec_" + "QUJD" * 8)
        return signer.fal_headers(body, task.provider_task_id, sign=fal_signer(Ed25519PrivateKey.generate()))
    if signing == "stale":
        offset = draw(st.sampled_from([-1, 1])) * draw(st.integers(min_value=301, max_value=10**6))
        if magnific:
            return signer.magnific_headers(body, sent_at=datetime.now(UTC) + timedelta(seconds=offset))
        return signer.fal_headers(body, task.provider_task_id, sent_at=time.time() + offset)
    if signing == "random":
        names = (
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
            if magnific
            else [
                "x-fal-webhook-request-id",
                "x-fal-webhook-user-id",
                "x-fal-webhook-timestamp",
                "x-fal-webhook-signature",
            ]
        )
        return draw(st.fixed_dictionaries({name: _header_values for name in names}))
    return {}


# -- the property ---------------------------------------------------------------------------

Post = Callable[[Delivery], tuple[int, Any]]
"""Sends one delivery; its status and decoded JSON body."""


def check(
    rig: CallbackRig, document: dict[str, Any], post: Post, drawn: Drawn, before: Snapshot
) -> tuple[int, Snapshot]:
    """Post `drawn`; assert no 5xx, a documented answer, and no change from `before` unless
    it is authentic. The status, and the state after (the next example's `before`: nothing
    else changes the state while a fuzz runs)."""
    status, body = post(drawn.delivery)
    assert status < 500, (status, body)
    assert status in documented_statuses(document, drawn.delivery.route) | {404}, (status, body)
    assert isinstance(body, dict) and (set(body) in ({"message"}, {"outcome"})), body
    if status == 401:
        assert body == {"message": "Unauthorized"}
    after = rig.snapshot()
    if not drawn.authentic:
        assert 400 <= status < 500, (status, body)
        assert after == before
    return status, after
