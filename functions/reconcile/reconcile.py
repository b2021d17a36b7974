"""ReconcileFunction: the polling routes' status checks from the poll queue, and the
scheduled safety net for missed webhooks, broken poll chains and stuck tasks."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from i2v import wiring
from i2v.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


def poll_record(record: SQSRecord) -> None:
    """One status check; raising marks it failed, a provider outage with its next
    delivery pushed out by the backoff. An unreadable one, or one failing its last
    delivery, goes to the dead-letter queue with its reason."""
    from i2v.redelivery import reading, retried
    from i2v.usecases.poll import PollOrder

    with retried(record, wiring.poll_redelivery):
        with reading("the status check"):
            order = PollOrder.model_validate_json(record.body)
        logger.set_correlation_id(order.task_id)
        outcome = wiring.poller()(order)
        logger.info("poll handled", extra={"outcome": outcome.value})


@cache
def _poll_batches() -> BatchProcessor:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:
        from aws_lambda_powertools.utilities.batch import process_partial_response

        return dict(
            process_partial_response(
                event=event, record_handler=poll_record, processor=_poll_batches(), context=context
            )
        )
    report = wiring.reconciler()(lambda: context.get_remaining_time_in_millis() / 1000)
    logger.info("reconciled", extra={"report": dict(report)})
    return dict(report)
