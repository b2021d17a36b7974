"""The published contracts, generated from the code that produces them.

    python -m local.contracts          # writes docs/contracts/notification.schema.json
    python -m local.contracts --check  # fails if the committed file differs

tests/unit/test_contracts.py runs the check, so the schema cannot drift from the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts"
NOTIFICATION_SCHEMA = CONTRACTS / "notification.schema.json"
NOTIFICATION_SCHEMA_ID = "urn:happyhorse:i2v:notification:1"
"""One id per major version: every 1.x message validates against the newest 1.x schema."""


def notification_schema() -> dict[str, Any]:
    """The notification's JSON Schema (draft 2020-12), from the model that builds the messages."""
    from i2v.notify import NotificationMessage

    # Serialization mode: the schema of what goes on the wire, the model's dump.
    generated = NotificationMessage.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": NOTIFICATION_SCHEMA_ID,
        **generated,
        "title": "HappyHorse image-to-video notification",
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args(argv)
    expected = render(notification_schema())
    if args.check:
        current = NOTIFICATION_SCHEMA.read_text() if NOTIFICATION_SCHEMA.exists() else ""
        if current != expected:
            print(f"{NOTIFICATION_SCHEMA} is stale: run python -m local.contracts", file=sys.stderr)
            return 1
        return 0
    NOTIFICATION_SCHEMA.parent.mkdir(parents=True, exist_ok=True)
    NOTIFICATION_SCHEMA.write_text(expected)
    print(f"wrote {NOTIFICATION_SCHEMA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
