"""boto3 clients, made once per process, lazily, with botocore's standard retry mode.

boto3 honours AWS_ENDPOINT_URL, which is how the local stack points every client at
its emulator without a line of special code here.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    return boto3.client(service, config=config)
