"""SubmitFunction: S3 upload notifications from the uploads queue, in batches."""

from typing import Any

# Before anything imports pydantic: Powertools' batch module imports all of its parser's
# pydantic models when it finds pydantic already loaded (~60-85 ms here).
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from i2v import wiring
from i2v.observability import logger, metrics, tracer

# Report every failed record, even when all failed: the response stays the same shape.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def submit_record(record: SQSRecord) -> None:
    """One message of S3 notifications; raising marks it failed, after a provider outage
    with its next delivery pushed out by the backoff. An unreadable one, or one failing
    its last delivery, goes to the dead-letter queue with its reason."""
    from i2v.redelivery import reading, retried
    from i2v.usecases.submit import uploads_in

    submit = wiring.submit()
    with retried(record, wiring.uploads_redelivery):
        with reading("the upload notification"):
            uploads = list(uploads_in(record.json_body))
        for upload in uploads:
            outcome = submit(upload, record.message_id)
            logger.info("upload handled", extra={"outcome": outcome.value})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=submit_record, processor=processor, context=context
    )
