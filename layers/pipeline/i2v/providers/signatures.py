"""Standard Webhooks signatures (HMAC-SHA256 over `id.timestamp.body`), shared by the
routes that sign that way. The reference package checks the headers, the +-5 minute
window and the constant-time comparison; what varies per route is how its secret becomes
the key (`KeyEncoding`) and which `v<N>,` version its header entries carry.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from i2v.errors import Unauthorized
from i2v.providers.route import KeyEncoding

if TYPE_CHECKING:
    from i2v.providers.base import Credentials

_ENTRY = re.compile(r"^v\d+,")


def webhook_key(secret: str, encoding: KeyEncoding = "standard") -> bytes:
    """The HMAC key a route's webhook secret stands for."""
    if encoding == "raw" or (encoding == "standard" and not secret.startswith("whsec_")):
        return secret.encode("utf-8")
    encoded = secret.removeprefix("whsec_")
    try:  # padded or not, as the reference package reads it
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the webhook secret is not valid base64") from exc


def verify_standard_webhook(
    headers: Mapping[str, str], body: bytes, secret: str, *, encoding: KeyEncoding = "standard"
) -> None:
    """Raise Unauthorized unless one `v<N>,<base64>` entry of `webhook-signature` matches."""
    from standardwebhooks import Webhook

    lowered = {k.lower(): v for k, v in headers.items()}
    # The package compares `v1,` entries only; any numbered version is the same HMAC, so
    # each is offered as `v1` (asymmetric `v1a` entries are not HMACs and are left out).
    entries = [e for e in lowered.get("webhook-signature", "").split(" ") if _ENTRY.match(e)]
    lowered["webhook-signature"] = " ".join("v1," + e.split(",", 1)[1] for e in entries)
    try:
        Webhook(webhook_key(secret, encoding)).verify(body, lowered, json_parse=False)
    except Exception as exc:
        raise Unauthorized(f"webhook signature rejected ({type(exc).__name__})") from exc


def verify_with_rotation(
    headers: Mapping[str, str], body: bytes, credentials: Credentials, *, encoding: KeyEncoding = "standard"
) -> None:
    """verify_standard_webhook with the secret held, then, if it matches none, with what a
    rotation may have brought: the value stored now and the one it replaced. A webhook
    signed just before or after a rotation is accepted; one matching no secret is not."""
    held = credentials.webhook_secret()
    try:
        verify_standard_webhook(headers, body, held, encoding=encoding)
    except Unauthorized as refused:
        for secret in credentials.rotated_webhook_secrets():
            if secret == held:
                continue
            try:
                verify_standard_webhook(headers, body, secret, encoding=encoding)
            except Unauthorized:
                continue
            return
        raise refused from None
