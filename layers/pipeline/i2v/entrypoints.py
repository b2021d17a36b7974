"""The edge between Lambda events and the use cases: decode, wire, call, map the answer.

Each function's handler is a stack of Powertools decorators around one call into here.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from i2v.aws import client
from i2v.config import settings
from i2v.errors import ProviderUnavailable
from i2v.observability import logger, metrics
from i2v.wiring import notifier, progress, provider, source_store, task_store

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.api_gateway_proxy_event import (
        APIGatewayProxyEventV2,
    )
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


def submit_record(record: SQSRecord) -> None:
    """One SQS message of S3 notifications. Raising marks it failed in the batch response;
    a provider outage first pushes the message's next delivery out by the backoff."""
    from i2v.usecases.submit import SubmitConfig, retry_delay, submit_upload, uploads_in

    config = settings()
    submit_config = SubmitConfig(
        defaults=config.default_options,
        incoming_prefix=config.incoming_prefix,
        webhook_base_url=config.webhook_base_url,
        presign_expiry_seconds=config.presign_expiry_seconds,
    )
    for upload in uploads_in(json.loads(record.body)):
        try:
            outcome = submit_upload(
                upload,
                config=submit_config,
                store=task_store(),
                sources=source_store(),
                provider=provider(),
                notify=notifier().publish,
                metrics=metrics,
                clock=time.time,
            )
        except ProviderUnavailable as exc:
            attempt = int(record.attributes.approximate_receive_count or 1)
            delay = retry_delay(
                attempt,
                base=config.submit_backoff_base_seconds,
                cap=config.submit_backoff_max_seconds,
                retry_after=exc.retry_after,
            )
            logger.warning(
                "provider unavailable; retrying later",
                extra={"reason": exc.message, "attempt": attempt, "delay_seconds": delay},
            )
            client("sqs").change_message_visibility(
                QueueUrl=config.uploads_queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=delay,
            )
            raise
        logger.info("upload handled", extra={"outcome": outcome.value})


def callback_response(event: APIGatewayProxyEventV2, task_id: str, owner: str) -> dict[str, Any]:
    """A provider webhook; Unauthorized and BadCallback propagate to the resolver's handlers."""
    from i2v.usecases.callback import CallbackRequest, apply_callback, authenticate
    from i2v.usecases.progress import UpdateOutcome

    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    request = CallbackRequest(
        task_id=task_id,
        token=(event.query_string_parameters or {}).get("token", ""),
        headers=dict(event.headers or {}),
        body=body,
    )
    task = authenticate(request, task_store())
    outcome = apply_callback(task, request, provider=provider(), progress=progress(owner))
    if outcome is UpdateOutcome.RETRY_LATER:
        return {
            "status_code": 503,
            "body": {"outcome": outcome.value, "message": "video not stored yet; it will be retried"},
        }
    return {"status_code": 200, "body": {"outcome": outcome.value}}


def run_reconcile(owner: str, time_left: Callable[[], float]) -> Counter[str]:
    from i2v.usecases.reconcile import ReconcileConfig, reconcile

    config = settings()
    report = reconcile(
        config=ReconcileConfig(
            reconcile_after_seconds=config.reconcile_after_seconds,
            task_deadline_seconds=config.task_deadline_seconds,
        ),
        provider=provider(),
        progress=progress(owner),
        time_left=time_left,
    )
    logger.info("reconciled", extra={"report": dict(report)})
    return report
