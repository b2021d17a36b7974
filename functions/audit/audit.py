"""AuditFunction: the scheduled upload audit (i2v/usecases/audit.py): uploads that never
became a task, succeeded tasks without their video, outcomes never announced."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from i2v import wiring
from i2v.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = wiring.auditor()(lambda: context.get_remaining_time_in_millis() / 1000)
    return report.to_dict()
