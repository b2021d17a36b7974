"""The routes the contract suite runs against: one line each.

The suite reads everything else from the route itself: whether it takes webhooks (its
registry entry), its input rules (its settings, as the functions load them) and its wire
bodies (its simulator's hooks). A line says only what cannot be read: how the provider
signs a webhook, and whether its answer for a failed task gives a reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from local.stack import LocalStack

WebhookSigner = Callable[[LocalStack, str, str, bytes, int], dict[str, str]]
"""(stack, route, provider task id, body, unix time) -> the headers of a webhook with
`body`, signed at that time as the route's provider signs it."""


def standard_webhook_headers(
    stack: LocalStack, route: str, provider_task_id: str, body: bytes, sent_at: int
) -> dict[str, str]:
    """Standard Webhooks (HMAC over `id.timestamp.body`) with the route's stored secret."""
    from local.simulators.magnific import webhook_signer

    secret = stack.route_secrets[route].webhook_secret
    assert secret, f"route {route} has no webhook secret to sign with"
    webhook_id = f"msg_contract_{uuid.uuid4().hex}"
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(sent_at),
        "webhook-signature": webhook_signer(secret).sign(
            webhook_id, datetime.fromtimestamp(sent_at, UTC), body.decode()
        ),
    }


def fal_webhook_headers(
    stack: LocalStack, route: str, provider_task_id: str, body: bytes, sent_at: int
) -> dict[str, str]:
    """fal's Ed25519 signature, made by the simulator whose JWKS the pipeline trusts."""
    from local.simulators.fal import FalSimulator

    simulator = stack.simulators[route]
    assert isinstance(simulator, FalSimulator)
    # The simulator's own header names and user id; then the signature for `sent_at`.
    headers = simulator.webhook_headers(f"msg_contract_{uuid.uuid4().hex}", body.decode())
    headers["x-fal-webhook-timestamp"] = str(sent_at)
    headers["x-fal-webhook-signature"] = simulator.sign(provider_task_id, body, sent_at)
    return headers


@dataclass(frozen=True)
class RouteContract:
    """What the suite is told about one route."""

    name: str
    sign_webhook: WebhookSigner | None = None
    """How the provider signs its webhooks; None for a route that sends none."""
    failure_reason_on_wire: bool = True
    """Whether the provider's answer for a failed task says why (Magnific's says only FAILED)."""

    def __str__(self) -> str:
        return self.name


ROUTES: tuple[RouteContract, ...] = (
    RouteContract("magnific", sign_webhook=standard_webhook_headers, failure_reason_on_wire=False),
    RouteContract("dashscope"),
    RouteContract("apiyi"),
    RouteContract("aimlapi"),
    RouteContract("fal", sign_webhook=fal_webhook_headers),
)

KNOWN_DEFECTS: Mapping[tuple[str, str], str] = {}
"""(test function, route) -> the pipeline defect it shows. Each is a strict xfail: the fix
makes the test pass, and the suite fails until its line here is removed."""
