"""An upload's options: stack defaults < S3 user metadata < an optional JSON sidecar.

Metadata keys are `prompt`, `resolution`, `duration`, `seed`, `model` (HappyHorse 1.0 or
1.1) and `provider` (the route that should take the upload); S3 metadata is ASCII,
so the prompt may be percent-encoded UTF-8. A long prompt (up to 5000 characters; each
route has its own limit, checked before submission) can come from a JSON sidecar in the
same bucket, named by the `options` metadata key and uploaded before the image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from i2v.domain import Options
from i2v.errors import InvalidOptions

OPTION_KEYS = ("prompt", "resolution", "duration", "seed", "model", "provider")
SIDECAR_KEY = "options"
SIDECAR_SUFFIX = ".json"
MAX_SIDECAR_BYTES = 64 * 1024


def is_sidecar(key: str) -> bool:
    return key.lower().endswith(SIDECAR_SUFFIX)


def _from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    lowered = {k.lower(): v for k, v in metadata.items()}
    for name in OPTION_KEYS:
        if name not in lowered:
            continue
        raw = lowered[name].strip()
        if name == "prompt":
            try:
                found[name] = unquote(raw, encoding="utf-8", errors="strict")
            except UnicodeDecodeError as exc:
                raise InvalidOptions("metadata 'prompt' is not valid percent-encoded UTF-8") from exc
        elif name == "resolution":
            found[name] = raw.upper()
        elif name == "provider":
            found[name] = raw.lower()
        else:
            found[name] = raw
    return found


def _from_sidecar(body: bytes, key: str) -> dict[str, Any]:
    if len(body) > MAX_SIDECAR_BYTES:
        raise InvalidOptions(f"options sidecar {key!r} is over {MAX_SIDECAR_BYTES} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidOptions(f"options sidecar {key!r} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidOptions(f"options sidecar {key!r} must hold a JSON object")
    unknown = sorted(set(data) - set(OPTION_KEYS))
    if unknown:
        raise InvalidOptions(
            f"options sidecar {key!r} has unknown fields {unknown}; allowed: {list(OPTION_KEYS)}"
        )
    return data


def _describe(error: ValidationError) -> str:
    parts = []
    for issue in error.errors():
        field = ".".join(str(p) for p in issue["loc"]) or "options"
        parts.append(f"{field}: {issue['msg']}")
    return "; ".join(parts)


def resolve_options(
    defaults: Options,
    metadata: Mapping[str, str],
    read_sidecar: Callable[[str], bytes],
) -> Options:
    """Merge the layers and validate the result; raises InvalidOptions with every reason."""
    merged: dict[str, Any] = defaults.model_dump()
    merged |= _from_metadata(metadata)
    sidecar_key = {k.lower(): v for k, v in metadata.items()}.get(SIDECAR_KEY, "").strip()
    if sidecar_key:
        merged |= _from_sidecar(read_sidecar(unquote(sidecar_key)), sidecar_key)
    try:
        return Options.model_validate(merged)
    except ValidationError as exc:
        raise InvalidOptions(f"invalid options: {_describe(exc)}") from exc
