"""Per-task callback tokens: random, carried in the webhook URL, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, expected_hash: str | None) -> bool:
    """Constant-time comparison of a presented token with the stored hash."""
    return expected_hash is not None and hmac.compare_digest(hash_token(token), expected_hash)
