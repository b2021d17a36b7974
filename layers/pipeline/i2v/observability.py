"""Logger, tracer and metrics: created once, shared by every function."""

from __future__ import annotations

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
