"""ReconcileFunction: the scheduled safety net for missed webhooks and stuck tasks."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from i2v import wiring
from i2v.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    report = wiring.reconciler()(lambda: context.get_remaining_time_in_millis() / 1000)
    logger.info("reconciled", extra={"report": dict(report)})
    return dict(report)
