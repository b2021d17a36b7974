"""What operators see: the HTTP API's access log (JSON, never the query string, where the
per-task token travels) and an alarm on every dead-letter queue."""

from __future__ import annotations

import json
import re
from typing import Any

# HTTP API $context variables that hold no part of the query string (AWS's "Customize HTTP
# API access logs"): `path` is "the request path", `routeKey` the route template. Anything
# else (the request or its overrides, authorizer values, error texts) is refused until read.
QUERY_FREE_VARIABLES = frozenset(
    {
        "$context.requestId",
        "$context.requestTimeEpoch",
        "$context.httpMethod",
        "$context.routeKey",
        "$context.path",
        "$context.protocol",
        "$context.status",
        "$context.responseLength",
        "$context.responseLatency",
        "$context.integrationStatus",
        "$context.integrationLatency",
        "$context.error.responseType",
        "$context.identity.sourceIp",
        "$context.identity.userAgent",
    }
)
_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_.]*")


def access_log(template: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    return settings


def dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Every queue another queue's RedrivePolicy sends to."""
    return {
        resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource["Properties"]
    }


def test_http_api_logs_each_request_as_one_json_object(template: dict[str, Any]) -> None:
    # Given the HTTP API's access log settings
    settings = access_log(template)

    # Then the format is a JSON object of strings, written to the stack's own log group
    fields = json.loads(settings["Format"])
    assert isinstance(fields, dict) and fields
    assert all(isinstance(value, str) for value in fields.values())
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    assert {"$context.requestId", "$context.routeKey", "$context.status"} <= set(fields.values())


def query_leaks(format_: str) -> list[str]:
    """What in an access log format could record the query string: a field that is not
    exactly one known query-free variable, or any other variable named anywhere."""
    fields = json.loads(format_)
    leaks = [f"{name}: {value}" for name, value in fields.items() if value not in QUERY_FREE_VARIABLES]
    leaks += sorted(set(_VARIABLE.findall(format_)) - QUERY_FREE_VARIABLES)
    return leaks


def test_no_access_log_field_can_carry_the_query_string(template: dict[str, Any]) -> None:
    # Given the access log format
    format_ = access_log(template)["Format"]

    # Then no field can hold the query string (with its token)
    assert query_leaks(format_) == []


def test_the_leak_check_refuses_formats_that_would_log_the_token() -> None:
    # Given formats that would record the query, as a field or inside a field's text
    leaky = {
        '{"override":"$context.requestOverride.querystring.token"}': "override: $context.requestOverride",
        '{"path":"$context.path","raw":"$request.querystring.token"}': "raw: $request.querystring.token",
        '{"path":"$context.path?$context.authorizer.query"}': "path: $context.path?",
    }

    # Then the check names each of them
    for format_, leak in leaky.items():
        assert any(found.startswith(leak) for found in query_leaks(format_)), (format_, query_leaks(format_))


def test_access_log_group_keeps_logs_for_the_stacks_retention(template: dict[str, Any]) -> None:
    # Given the access log group
    group = template["Resources"]["HttpApiAccessLogGroup"]

    # Then it is a log group of the stack with the functions' retention
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_every_dead_letter_queue_has_an_alarm_on_its_depth(template: dict[str, Any]) -> None:
    # Given the dead-letter queues and the alarms of the template
    queues = dead_letter_queues(template)
    alarms = {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and resource["Properties"].get("Namespace") == "AWS/SQS"
    }

    # Then each queue has one alarm that fires on a single visible message
    watched = {
        properties["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: properties for properties in alarms.values()
    }
    assert queues == {"UploadsDeadLetterQueue", "FinalizeDeadLetterQueue", "PollDeadLetterQueue"}
    assert set(watched) == queues
    for properties in watched.values():
        assert properties["Namespace"] == "AWS/SQS"
        assert properties["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert properties["Dimensions"][0]["Name"] == "QueueName"
        assert properties["Statistic"] == "Maximum"
        assert properties["ComparisonOperator"] == "GreaterThanThreshold"
        assert properties["Threshold"] == 0
        assert properties["TreatMissingData"] == "notBreaching"


def test_alarms_survive_translation(translated: dict[str, Any]) -> None:
    # Given the template CloudFormation receives
    alarms = [r for r in translated["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    stages = [r for r in translated["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]

    # Then the dead-letter alarms are there (tests/template/test_alarms.py: all of them), and
    # the API's stage carries the access log settings
    assert sum(alarm["Properties"].get("Namespace") == "AWS/SQS" for alarm in alarms) == 3
    assert len(stages) == 1
    assert stages[0]["Properties"]["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]
    }
