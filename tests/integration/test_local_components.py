"""The local stack's parts on their own: Lambda-like environments, the SQS dispatcher's
event source mapping semantics, the HTTP API's events, and template evaluation."""

from __future__ import annotations

import base64
import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.cloudformation import PhysicalResource, TemplateEvaluator
from local.dispatcher import SqsDispatcher, SqsEventSource
from local.gateway import HttpApiGateway
from local.lambda_runtime import FunctionConfig, FunctionError, LocalFunction
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROBE_HANDLER = textwrap.dedent(
    """
    import os
    import time

    def handler(event, context):
        if event.get("sleep"):
            time.sleep(event["sleep"])
        return {
            "event": event,
            "function_name": context.function_name,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "aws_request_id": context.aws_request_id,
            "greeting": os.environ.get("GREETING"),
            "leaked": os.environ.get("HOME_SECRET"),
            "cwd": os.getcwd(),
        }
    """
)


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFunction]:
    code_dir = tmp_path / "probe"
    code_dir.mkdir()
    (code_dir / "probe.py").write_text(PROBE_HANDLER)
    monkeypatch.setenv("HOME_SECRET", "the developer's own environment")
    function = LocalFunction(
        FunctionConfig(
            logical_id="ProbeFunction",
            function_name="stack-ProbeFunction-ABC",
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:stack-ProbeFunction-ABC",
            code_dir=code_dir,
            handler="probe.handler",
            timeout_seconds=2,
            memory_mb=256,
            layer_dirs=(),
            environment={"GREETING": "hello"},
            region="us-east-1",
        ),
        max_environments=2,
        log_stream=None,
    )
    yield function
    function.stop()


def test_a_function_runs_with_its_own_environment_and_a_lambda_context(probe: LocalFunction) -> None:
    # Given a function whose handler reports what it sees
    # When it is invoked
    result = probe.invoke({"hello": "world"})

    # Then it got a JSON copy of the event, Lambda's context, and only its own environment
    assert result["event"] == {"hello": "world"}
    assert result["function_name"] == "stack-ProbeFunction-ABC"
    assert result["invoked_function_arn"].endswith(":function:stack-ProbeFunction-ABC")
    assert result["memory_limit_in_mb"] == 256
    assert 0 < result["remaining_ms"] <= 2000
    assert result["greeting"] == "hello"
    assert result["leaked"] is None
    assert result["cwd"] == str(probe.config.code_dir)


def test_a_function_past_its_timeout_is_stopped_as_lambda_stops_it(probe: LocalFunction) -> None:
    # Given a function with a 2 s timeout
    # When an invocation takes longer
    started = time.monotonic()
    with pytest.raises(FunctionError) as raised:
        probe.invoke({"sleep": 30})

    # Then it fails as a Lambda timeout, in about the timeout, and the next one still runs
    assert raised.value.error_type == "Sandbox.Timedout"
    assert time.monotonic() - started < 10
    assert probe.invoke({"again": True})["event"] == {"again": True}


def test_a_handler_that_cannot_be_imported_fails_its_init(probe: LocalFunction) -> None:
    # Given a function whose handler module does not import
    (probe.config.code_dir / "broken.py").write_text("import a_module_that_is_not_there\n")
    broken = LocalFunction(
        replace(probe.config, handler="broken.handler"), max_environments=1, log_stream=None
    )

    # When it is invoked
    with pytest.raises(FunctionError) as raised:
        broken.invoke({})

    # Then the init error is what the invocation reports
    assert raised.value.error_type == "ModuleNotFoundError"
    assert "a_module_that_is_not_there" in raised.value.error_message
    broken.stop()


class RecordingFunction:
    """A stand-in function for the dispatcher: records batches, answers as told."""

    name = "recording"

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        self.batches: list[dict[str, Any]] = []
        self._answer = answer
        self._lock = threading.Lock()

    def invoke(self, event: Any) -> Any:
        with self._lock:
            self.batches.append(event)
        return self._answer(event)

    def bodies(self) -> list[list[str]]:
        with self._lock:
            return [[record["body"] for record in batch["Records"]] for batch in self.batches]


def queue_with_visibility(stack: LocalStack, name: str, visibility_seconds: int) -> SqsEventSource:
    url = stack.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_seconds)})[
        "QueueUrl"
    ]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return SqsEventSource(
        queue_url=url,
        queue_arn=arn,
        region=stack.region,
        batch_size=5,
        batching_window_seconds=1,
        maximum_concurrency=2,
        report_batch_item_failures=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_the_dispatcher_keeps_only_the_records_reported_failed(stack: LocalStack) -> None:
    # Given a queue with two messages and a function that reports the second one failed once
    source = queue_with_visibility(stack, "partial-failures", visibility_seconds=2)
    stack.sqs.send_message(QueueUrl=source.queue_url, MessageBody="first")
    stack.sqs.send_message(
        QueueUrl=source.queue_url,
        MessageBody="second",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
    )

    def fail_second_once(event: dict[str, Any]) -> dict[str, Any]:
        failures = [
            {"itemIdentifier": record["messageId"]}
            for record in event["Records"]
            if record["body"] == "second" and record["attributes"]["ApproximateReceiveCount"] == "1"
        ]
        return {"batchItemFailures": failures}

    function = RecordingFunction(fail_second_once)
    dispatcher = SqsDispatcher(stack.sqs, source, function)

    # When the dispatcher runs until both were handled
    dispatcher.start()
    try:
        wait_for(lambda: sum(len(bodies) for bodies in function.bodies()) >= 3)
    finally:
        dispatcher.stop()

    # Then both came in one batch (the batching window), only the failed one came back,
    # and the queue is empty
    assert sorted(function.bodies()[0]) == ["first", "second"]
    assert function.bodies()[1:] == [["second"]]
    record = next(r for r in function.batches[0]["Records"] if r["body"] == "second")
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == source.queue_arn
    assert record["awsRegion"] == stack.region
    assert record["messageAttributes"]["kind"]["stringValue"] == "test"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert {"messageId", "receiptHandle", "md5OfBody", "md5OfMessageAttributes"} <= set(record)
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=source.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(attributes.values()) == {"0"}


def test_the_dispatcher_deletes_nothing_when_the_function_fails(stack: LocalStack) -> None:
    # Given a function that fails its first invocation
    source = queue_with_visibility(stack, "whole-batch-failures", visibility_seconds=2)
    stack.sqs.send_message(QueueUrl=source.queue_url, MessageBody="only")

    def fail_first(event: dict[str, Any]) -> None:
        if event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1":
            raise FunctionError("recording", {"errorType": "RuntimeError", "errorMessage": "boom"})

    function = RecordingFunction(fail_first)
    dispatcher = SqsDispatcher(stack.sqs, source, function)

    # When the dispatcher runs
    dispatcher.start()
    try:
        wait_for(lambda: len(function.batches) >= 2)
    finally:
        dispatcher.stop()

    # Then the message came back after its visibility timeout and was deleted after success
    assert function.bodies() == [["only"], ["only"]]
    second = function.batches[1]["Records"][0]
    assert second["attributes"]["ApproximateReceiveCount"] == "2"
    wait_for(
        lambda: (
            stack.sqs.get_queue_attributes(
                QueueUrl=source.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
            == "0"
        )
    )


def test_the_gateway_sends_http_api_payload_2_events_and_maps_the_response() -> None:
    # Given a gateway with one route to a function that answers in binary
    function = RecordingFunction(
        lambda event: {
            "statusCode": 202,
            "headers": {"X-Answer": "yes"},
            "cookies": ["seen=1"],
            "body": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        }
    )
    gateway = HttpApiGateway(api_id="abc123", account_id="123456789012")
    gateway.add_route("POST", "/callbacks/{task_id}", function)
    gateway.start()
    try:
        # When a request with a query, repeated headers, a cookie and a binary body arrives
        answer = httpx.post(
            f"{gateway.url}/callbacks/task%201?token=t1&x=a&x=b",
            headers=[("X-Repeated", "one"), ("X-Repeated", "two"), ("Cookie", "a=1; b=2")],
            content=b"\x89binary\xff",
        )
    finally:
        gateway.stop()

    # Then the function got a payload 2.0 event
    (event,) = function.batches
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /callbacks/{task_id}"
    assert event["rawPath"] == "/callbacks/task%201"
    assert event["rawQueryString"] == "token=t1&x=a&x=b"
    assert event["queryStringParameters"] == {"token": "t1", "x": "a,b"}
    assert event["pathParameters"] == {"task_id": "task 1"}
    assert event["headers"]["x-repeated"] == "one,two"
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x89binary\xff"
    context = event["requestContext"]
    assert context["http"]["method"] == "POST"
    assert context["http"]["sourceIp"] == "127.0.0.1"
    assert (context["stage"], context["apiId"], context["routeKey"]) == (
        "$default",
        "abc123",
        event["routeKey"],
    )
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 10
    # and the caller got the function's answer
    assert answer.status_code == 202
    assert answer.headers["x-answer"] == "yes"
    assert answer.headers["set-cookie"] == "seen=1"
    assert answer.content == b"\x00\xff"
    # and the request was recorded as it came
    (recorded,) = gateway.requests("/callbacks/")
    assert (recorded.method, recorded.status, recorded.body) == ("POST", 202, b"\x89binary\xff")


def test_the_gateway_answers_failures_and_slow_functions_as_api_gateway_does() -> None:
    # Given routes to a failing function and to one slower than the integration timeout
    finished = threading.Event()

    def fail(event: dict[str, Any]) -> None:
        raise FunctionError("failing", {"errorType": "RuntimeError", "errorMessage": "boom"})

    def slow(event: dict[str, Any]) -> dict[str, Any]:
        time.sleep(1.0)
        finished.set()
        return {"statusCode": 200, "body": "late"}

    gateway = HttpApiGateway(api_id="abc123", account_id="123456789012", integration_timeout_seconds=0.3)
    gateway.add_route("POST", "/fail", RecordingFunction(fail))
    gateway.add_route("POST", "/slow", RecordingFunction(slow))
    gateway.start()
    try:
        # When each is called
        failed = httpx.post(f"{gateway.url}/fail")
        late = httpx.post(f"{gateway.url}/slow")
    finally:
        gateway.stop()

    # Then the caller gets API Gateway's 500 and 503, and the slow function still ran to its end
    assert (failed.status_code, failed.json()) == (500, {"message": "Internal Server Error"})
    assert (late.status_code, late.json()) == (503, {"message": "Service Unavailable"})
    assert finished.is_set()


def test_template_values_are_evaluated_like_cloudformation() -> None:
    # Given a template fragment with parameters, conditions and intrinsic functions
    template = {
        "Parameters": {
            "Stage": {"Type": "String", "Default": "dev"},
            "Hosts": {"Type": "CommaDelimitedList"},
        },
        "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
    }
    evaluator = TemplateEvaluator(
        template,
        stack_name="demo",
        region="eu-west-1",
        account_id="123456789012",
        resource_lookup=lambda logical_id: PhysicalResource(
            ref=f"https://sqs/{logical_id}", attributes={"Arn": f"arn:aws:sqs:::{logical_id}"}
        ),
        parameter_overrides={"Hosts": "a.example,b.example"},
    )

    # When values are resolved
    resolved = evaluator.resolve(
        {
            "Url": {"Ref": "Queue"},
            "Arn": {"Fn::Sub": "${Queue.Arn}/${AWS::Region}/${Stage}/${!Literal}"},
            "Listed": {"Fn::Sub": ["${Name}-${AWS::AccountId}", {"Name": {"Ref": "AWS::StackName"}}]},
            "Host": {"Fn::Select": [1, {"Ref": "Hosts"}]},
            "Joined": {"Fn::Join": ["+", {"Fn::Split": [",", "x,y"]}]},
            "OnlyInProd": {"Fn::If": ["IsProd", "yes", {"Ref": "AWS::NoValue"}]},
            "Level": {"Fn::If": ["IsProd", "WARN", "DEBUG"]},
            "Json": {"Fn::ToJsonString": {"a": {"Ref": "Stage"}}},
        }
    )

    # Then they are what CloudFormation would give
    assert resolved == {
        "Url": "https://sqs/Queue",
        "Arn": "arn:aws:sqs:::Queue/eu-west-1/dev/${Literal}",
        "Listed": "demo-123456789012",
        "Host": "b.example",
        "Joined": "x+y",
        "Level": "DEBUG",
        "Json": '{"a":"dev"}',
    }
    assert json.loads(resolved["Json"]) == {"a": "dev"}
