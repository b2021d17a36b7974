"""Logger, tracer and metrics: created once, shared by every function."""

from __future__ import annotations

import logging
from typing import Protocol

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
tracer = Tracer()
metrics = Metrics()

__all__ = ["MetricUnit", "MetricsSink", "logger", "metrics", "tracer"]


class MetricsSink(Protocol):
    """What use cases need of a metrics recorder (Powertools' Metrics is one)."""

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None: ...


# httpx logs every request's full URL at INFO; a presigned URL or a query token must not
# reach the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
