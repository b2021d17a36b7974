"""CallbackFunction: provider webhooks on POST /callbacks/{route}/{task_id}, answered at
once, and the finalize queue, whose orders download the videos and end the tasks.

The HTTP resolver loads on the first webhook (its package imports every Powertools
resolver: AppSync, Bedrock, ...), so a finalize order never pays for it.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import TYPE_CHECKING, Any

# Before anything imports pydantic: Powertools' batch module imports all of its parser's
# pydantic models when it finds pydantic already loaded (~60-85 ms here); loaded first,
# it costs a few ms. The webhook path loads most of what it needs anyway (asyncio, the
# event data classes) with the HTTP resolver.
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from i2v import wiring
from i2v.errors import BadCallback, RetryLater, Unauthorized
from i2v.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from i2v.usecases.callback import CallbackTooLarge


# Callback URLs given before routes were named in them are Magnific's.
LEGACY_ROUTE = "magnific"


@tracer.capture_method
def callback(task_id: str, route: str = LEGACY_ROUTE) -> Response[Any]:
    from aws_lambda_powertools.event_handler import Response, content_types

    from i2v.usecases.callback import CallbackRequest

    event = webhooks().current_event
    raw = event.body or ""
    request = CallbackRequest(
        route=route,
        task_id=task_id,
        token=(event.query_string_parameters or {}).get("token", ""),
        headers=dict(event.headers or {}),
        body=base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8"),
    )
    outcome = wiring.callback()(request)
    return Response(200, content_types.APPLICATION_JSON, {"outcome": outcome.value})


def unauthorized(exc: Unauthorized) -> Response[Any]:
    from aws_lambda_powertools.event_handler import Response, content_types

    logger.warning("callback refused", extra={"reason": exc.message})
    return Response(401, content_types.APPLICATION_JSON, {"message": "Unauthorized"})


def bad_callback(exc: BadCallback) -> Response[Any]:
    from aws_lambda_powertools.event_handler import Response, content_types

    logger.warning("callback not understood", extra={"reason": exc.message})
    return Response(400, content_types.APPLICATION_JSON, {"message": exc.message})


def too_large(exc: CallbackTooLarge) -> Response[Any]:
    from aws_lambda_powertools.event_handler import Response, content_types

    logger.warning("callback refused", extra={"reason": exc.message})
    return Response(413, content_types.APPLICATION_JSON, {"message": exc.message})


def unavailable(exc: RetryLater) -> Response[Any]:
    """A check that cannot be made now (fal's JWKS unreachable, say): the sender retries."""
    from aws_lambda_powertools.event_handler import Response, content_types

    logger.warning("callback not verified now; the sender will retry", extra={"reason": exc.message})
    headers = {"Retry-After": str(int(exc.retry_after or 30))}
    return Response(503, content_types.APPLICATION_JSON, {"message": "try again later"}, headers=headers)


@cache
def webhooks() -> APIGatewayHttpResolver:
    """The HTTP API's resolver with its route and error answers, built on the first webhook."""
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

    from i2v.usecases.callback import CallbackTooLarge

    app = APIGatewayHttpResolver()
    app.post("/callbacks/<route>/<task_id>")(callback)
    app.post("/callbacks/<task_id>")(callback)
    app.exception_handler(Unauthorized)(unauthorized)
    app.exception_handler(BadCallback)(bad_callback)
    app.exception_handler(CallbackTooLarge)(too_large)
    app.exception_handler(RetryLater)(unavailable)
    return app


def finalize_record(record: SQSRecord) -> None:
    """One finalize order; raising marks it failed, a transient failure with its next
    delivery pushed out by the backoff. An unreadable one, or one failing its last
    delivery, goes to the dead-letter queue with its reason."""
    from i2v.redelivery import attempt_of, reading, retried
    from i2v.usecases.progress import FinalizeOrder

    with retried(record, wiring.finalize_redelivery):
        with reading("the finalize order"):
            order = FinalizeOrder.model_validate_json(record.body)
        outcome = wiring.finalizer()(order, attempt=attempt_of(record))
        logger.info("finalize order handled", extra={"outcome": outcome.value})


@cache
def _finalize_batches() -> BatchProcessor:
    # Report every failed record, even when all failed: the response stays the same shape.
    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:
        return dict(
            process_partial_response(
                event=event, record_handler=finalize_record, processor=_finalize_batches(), context=context
            )
        )
    return webhooks().resolve(event, context)
