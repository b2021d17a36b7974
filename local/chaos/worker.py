"""Fault injection inside a function's process: `LOCAL_WORKER_HOOKS=local.chaos.worker`.

`install()` registers botocore event hooks on boto3's default session (the one every
client of the functions is made from); the functions' code is unchanged. Faults:

- `dynamodb_throttle`: one HTTP attempt of a DynamoDB call answers 400
  ProvisionedThroughputExceededException (botocore's retries usually absorb it);
- `dynamodb_error`: every attempt of one DynamoDB call answers 500 InternalServerError,
  so the function sees the error;
- `sns_publish_failure`: every attempt of one SNS Publish answers 500 InternalError;
- the process dies (`os._exit`, as a crashed or killed Lambda environment) at a step
  boundary: `die_after_claim` (the task claimed, nothing sent), `die_before_provider_id`
  (the provider answered, its id about to be recorded), `die_after_video_stored` (the
  video in S3, SUCCEEDED not written), `die_before_notification` (the terminal write
  done, its notification not published).

An injected error is answered before the request leaves the process, so it has no
effect in the emulator. The plan comes from `LOCAL_CHAOS` (JSON: seed, rates, the
fault log's path, a folder for the per-function process counter). Each process draws
from its own stream, seeded from (seed, function name, the how-many-th process of
that function this is), and appends every fault to the fault log.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from local.simulators.core.chaos import FaultLog, stream_seed

PLAN_VARIABLE = "LOCAL_CHAOS"
EXIT_STATUS = 137  # what a killed process reports (128 + SIGKILL)
WORKER_FAULTS = (
    "dynamodb_throttle",
    "dynamodb_error",
    "sns_publish_failure",
    "die_after_claim",
    "die_before_provider_id",
    "die_after_video_stored",
    "die_before_notification",
)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT"})
_DYNAMODB_ERRORS = {
    "dynamodb_throttle": (400, "ProvisionedThroughputExceededException", "Rate of requests exceeds capacity"),
    "dynamodb_error": (500, "InternalServerError", "Internal server error"),
}


def process_number(folder: Path, function: str) -> int:
    """1 for the function's first process, 2 for the next, ... (a counter file under a lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{function}.count").open("a+", encoding="utf-8") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        number = int(counter.read() or 0) + 1
        counter.seek(0)
        counter.truncate()
        counter.write(str(number))
    return number


class WorkerFaults:
    """The hooks of one process, with its seeded stream and the fault log."""

    def __init__(self, plan: dict[str, Any], function: str) -> None:
        rates = dict(plan.get("rates", {}))
        unknown = sorted(set(rates) - set(WORKER_FAULTS))
        if unknown:
            raise ValueError(f"unknown worker fault(s): {', '.join(unknown)}")
        self.rates = {kind: float(rates.get(kind, 0.0)) for kind in WORKER_FAULTS}
        self.function = function
        self.process = process_number(Path(plan["counter_dir"]), function)
        self._random = random.Random(stream_seed(plan["seed"], function, self.process))  # noqa: S311
        self._log = FaultLog(Path(plan["log"]))

    def strikes(self, kind: str, task_id: str | None, step: str | None = None) -> bool:
        struck = self._random.random() < self.rates[kind] if self.rates[kind] > 0 else False
        if struck:
            self._log.record(
                kind,
                source="worker",
                function=self.function,
                process=self.process,
                task_id=task_id,
                step=step,
            )
        return struck

    def die(self, kind: str, task_id: str | None) -> None:
        if self.strikes(kind, task_id):
            print(f"[chaos] {kind}: the process dies now", file=sys.stderr, flush=True)
            os._exit(EXIT_STATUS)

    # -- botocore hooks -------------------------------------------------------------------

    def before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """Once per API call (retries happen below): what the call is, and its faults."""
        service, operation = model.service_model.service_name, model.name
        context["chaos_service"] = service
        if service == "dynamodb":
            body = json.loads(params.get("body") or b"{}")
            key = body.get("Key") or body.get("Item") or {}
            task_id = (key.get("task_id") or {}).get("S")
            context["chaos_task_id"] = task_id
            context["chaos_claim"] = _is_claim(operation, body)
            context["chaos_terminal_write"] = _is_terminal_write(operation, body)
            records_provider_id = operation == "UpdateItem" and _sets_status(body, "SUBMITTED")
            if records_provider_id:
                self.die("die_before_provider_id", task_id)
            # The write after the create call records its outcome: SUBMITTED with the id, or
            # UNCONFIRMED when the call went unanswered. Either failing leaves the retry
            # unable to tell whether the provider took the task (docs/reliability.md).
            records_outcome = records_provider_id or (
                operation == "UpdateItem" and _sets_status(body, "UNCONFIRMED")
            )
            step = "record_provider_id" if records_outcome else None
            if self.strikes("dynamodb_error", task_id, step):
                context["chaos_fail_every_attempt"] = "dynamodb_error"
        elif service == "sns" and operation == "Publish":
            if self.strikes("sns_publish_failure", None):
                context["chaos_fail_every_attempt"] = "sns_publish_failure"
        elif service == "s3" and operation in ("PutObject", "CompleteMultipartUpload"):
            path = unquote(urlsplit(str(params.get("url") or params.get("url_path") or "")).path)
            if "/videos/" in path:  # videos/<path of the upload>/<task id>.mp4
                context["chaos_video_task"] = path.rsplit("/", 1)[-1].removesuffix(".mp4")

    def before_send(self, request: Any, **_: Any) -> Any:
        """Once per HTTP attempt: an injected answer instead of the emulator's, or None."""
        context = request.context or {}
        failing = context.get("chaos_fail_every_attempt")
        if (
            failing is None
            and context.get("chaos_service") == "dynamodb"
            and self.strikes("dynamodb_throttle", context.get("chaos_task_id"))
        ):
            failing = "dynamodb_throttle"
        if failing is None:
            return None
        if failing == "sns_publish_failure":
            return _response(500, {"content-type": "text/xml"}, _SNS_ERROR)
        status, code, message = _DYNAMODB_ERRORS[failing]
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return _response(status, {"content-type": "application/x-amz-json-1.0"}, body.encode())

    def after_call(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        """Death right after a step's write succeeded."""
        if http_response is None or http_response.status_code >= 300:
            return
        task_id = context.get("chaos_task_id")
        if context.get("chaos_claim"):
            self.die("die_after_claim", task_id)
        if context.get("chaos_video_task"):
            self.die("die_after_video_stored", context["chaos_video_task"])
        if context.get("chaos_terminal_write"):
            self.die("die_before_notification", task_id)


def _is_claim(operation: str, body: dict[str, Any]) -> bool:
    """The write that makes a task this message's: the first claim or a re-claim."""
    if operation == "PutItem":
        return (body.get("Item", {}).get("status") or {}).get("S") == "RECEIVED"
    return operation == "UpdateItem" and "lease_until < :now" in str(body.get("ConditionExpression", ""))


def _is_terminal_write(operation: str, body: dict[str, Any]) -> bool:
    """The write that ends a task (only its owner may: the condition names the owner)."""
    if operation != "UpdateItem" or "#owner = :owner" not in str(body.get("ConditionExpression", "")):
        return False
    return any(_sets_status(body, status) for status in TERMINAL)


def _sets_status(body: dict[str, Any], status: str) -> bool:
    values = body.get("ExpressionAttributeValues") or {}
    expression = str(body.get("UpdateExpression", ""))
    return "#status = :" in expression and any(
        value == {"S": status} and f"#status = {name}" in expression for name, value in values.items()
    )


_SNS_ERROR = (
    b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Receiver</Type>'
    b"<Code>InternalError</Code><Message>Injected failure</Message></Error>"
    b"<RequestId>chaos</RequestId></ErrorResponse>"
)


def _response(status: int, headers: dict[str, str], body: bytes) -> Any:
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield body

    return AWSResponse("https://chaos.invalid/", status, headers, _Raw())


def install() -> None:
    """Register the hooks on boto3's default session (kept if another hook made it)."""
    import boto3

    plan = json.loads(os.environ[PLAN_VARIABLE])
    faults = WorkerFaults(plan, os.environ["AWS_LAMBDA_FUNCTION_NAME"])
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    events = boto3.DEFAULT_SESSION.events
    events.register("before-call", faults.before_call)
    events.register("before-send", faults.before_send)
    events.register("after-call", faults.after_call)
