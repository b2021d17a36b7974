"""Logger, tracer and metrics: created once, shared by every function."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

__all__ = ["MetricUnit", "MetricsSink", "logger", "metrics", "tracer"]


class MetricsSink(Protocol):
    """What use cases need of a metrics recorder (Powertools' Metrics is one)."""

    def add_metric(self, name: str, unit: MetricUnit | str, value: float) -> None: ...


class _NoSegment(BaseSegment):
    """What a switched-off tracer records into: nothing."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class _NoTracing(BaseProvider):
    """The Tracer's provider when tracing is switched off: Powertools' default provider is
    the X-Ray recorder, which imports the X-Ray SDK (and wrapt, asyncio) at cold start even
    when the switch says no tracing. With the switch on, Tracer() keeps its X-Ray default."""

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def _tracing_switched_off() -> bool:
    # The values Powertools reads as true for POWERTOOLS_TRACE_DISABLED.
    return os.getenv("POWERTOOLS_TRACE_DISABLED", "false").lower() in {"1", "y", "yes", "t", "true", "on"}


logger = Logger()
tracer = Tracer(provider=_NoTracing()) if _tracing_switched_off() else Tracer()
metrics = Metrics()

# httpx logs every request's full URL at INFO; a presigned URL or a query token must not
# reach the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
