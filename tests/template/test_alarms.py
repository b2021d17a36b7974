"""The alarms: each one issue 9 asks for exists, notifies the stack's alarm topic (with its
optional e-mail) and AlarmTopicArn, watches a metric that is really published, with a
threshold that fires on what it says, and links to the section of docs/operations.md that
says how to answer it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.template.cfn import environment
from tests.template.test_dashboard import AWS_METRICS, emitted_metrics, functions
from tests.template.tools import ROOT

OPERATIONS = ROOT / "docs" / "operations.md"
ACTIONS = {
    "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmsTopic"}, {"Ref": "AlarmTopicArn"}], [{"Ref": "AlarmsTopic"}]]
}
SERVICE_OUTCOMES = ("TasksSucceeded", "TasksFailed", "TasksTimedOut", "TasksRejected")
# Issue 9, item 2 (the dead-letter alarms are tests/template/test_observability.py's).
COUNT_ALARMS = {
    "TasksTimedOutAlarm": ("HappyHorseI2V", "TasksTimedOut"),
    "BreakerOpenAlarm": ("HappyHorseI2V", "BreakerOpened"),
    "CallbackServerErrorsAlarm": ("AWS/ApiGateway", "5xx"),
}
RATE_ALARMS = {
    "TaskFailureRateAlarm": ("TasksFailed", "FailureRateAlarmPercent", 10),
    "TaskRejectionRateAlarm": ("TasksRejected", "RejectionRateAlarmPercent", 25),
}
_DOC_LINK = re.compile(r"docs/operations\.md#([a-z0-9-]+)")


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation gone, spaces to -."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def description(properties: dict[str, Any]) -> str:
    text = properties["AlarmDescription"]
    return str(text["Fn::Sub"] if isinstance(text, dict) else text)


def test_each_alarm_the_issue_asks_for_exists(template: dict[str, Any]) -> None:
    # Given the template's alarms
    found = alarms(template)

    # Then there is one per rate, per count, per function and metric, and per dead-letter queue
    per_function = {
        f"{logical_id.removesuffix('Function')}{kind}Alarm"
        for logical_id in functions(template)
        for kind in ("Errors", "Throttles")
    }
    expected = {
        *RATE_ALARMS,
        *COUNT_ALARMS,
        "CallbackClientErrorsAlarm",
        "UploadsDeadLetterAlarm",
        "FinalizeDeadLetterAlarm",
        "PollDeadLetterAlarm",
        *per_function,
    }
    assert expected <= set(found), sorted(expected - set(found))


def test_every_alarm_notifies_the_alarm_topic_and_the_given_one_on_alarm_and_ok(
    template: dict[str, Any],
) -> None:
    # Given every alarm of the template, whoever added it
    found = alarms(template)

    # Then each notifies the stack's topic, and AlarmTopicArn only when one is given
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    for logical_id, properties in found.items():
        assert properties["AlarmActions"] == ACTIONS, logical_id
        assert properties["OKActions"] == ACTIONS, logical_id


def test_the_alarm_topic_mails_the_alarm_email_only_when_one_is_given(template: dict[str, Any]) -> None:
    # Given the alarm topic, its subscription and the parameters
    resources, parameters = template["Resources"], template["Parameters"]
    subscription = resources["AlarmsEmailSubscription"]

    # Then the e-mail is optional and subscribed to the topic the alarms notify
    assert resources["AlarmsTopic"]["Type"] == "AWS::SNS::Topic"
    # CloudWatch cannot publish to a topic under the AWS managed key (decision 51).
    assert "KmsMasterKeyId" not in resources["AlarmsTopic"]["Properties"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmsTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert parameters["AlarmEmail"]["Default"] == parameters["AlarmTopicArn"]["Default"] == ""
    assert re.fullmatch(parameters["AlarmEmail"]["AllowedPattern"], "ops@example.com")
    assert not re.fullmatch(parameters["AlarmEmail"]["AllowedPattern"], "not an address")
    assert template["Outputs"]["AlarmsTopicArn"]["Value"] == {"Ref": "AlarmsTopic"}


def test_every_alarm_links_to_the_section_that_answers_it(template: dict[str, Any]) -> None:
    # Given the sections of docs/operations.md
    sections = anchors(OPERATIONS.read_text(encoding="utf-8"))

    # Then each alarm's description names one of them
    for logical_id, properties in alarms(template).items():
        links = _DOC_LINK.findall(description(properties))
        assert links, f"{logical_id}: its description links to no docs/operations.md section"
        assert set(links) <= sections, f"{logical_id}: docs/operations.md has no section {links}"


def test_the_anchor_reader_follows_githubs_rule() -> None:
    # Given headings with case, punctuation and spaces
    # Then their anchors are GitHub's
    assert anchors("## The dashboard\n### TaskFailureRateAlarm\n### Errors: any function (4xx/5xx)\n") == {
        "the-dashboard",
        "taskfailureratealarm",
        "errors-any-function-4xx5xx",
    }


def metric_stats(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: itself for a single-metric alarm, or its MetricStats."""
    if "MetricName" in properties:
        return [{key: properties[key] for key in ("Namespace", "MetricName", "Dimensions")}]
    return [query["MetricStat"]["Metric"] for query in properties["Metrics"] if "MetricStat" in query]


def test_every_alarm_watches_a_metric_that_is_published_where_it_looks(template: dict[str, Any]) -> None:
    # Given what the code emits, under Powertools' namespace and service dimension
    env = environment(template, "SubmitFunction")
    namespace, service = env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]
    emitted = emitted_metrics()
    function_refs = [{"Ref": logical_id} for logical_id in functions(template)]

    # Then each metric an alarm reads is one of them, or an AWS metric of this stack's resources
    for logical_id, properties in alarms(template).items():
        for metric in metric_stats(properties):
            where = f"{logical_id}: {metric['Namespace']} {metric['MetricName']}"
            dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            if metric["Namespace"] == namespace:
                assert metric["MetricName"] in emitted, where
                assert dimensions == {"service": service}, where
            elif metric["Namespace"] == "AWS/Lambda":
                assert metric["MetricName"] in AWS_METRICS["AWS/Lambda"], where
                assert dimensions["FunctionName"] in function_refs, where
            elif metric["Namespace"] == "AWS/ApiGateway":
                assert metric["MetricName"] in AWS_METRICS["AWS/ApiGateway"], where
                assert dimensions == {"ApiId": {"Ref": "HttpApi"}, "Stage": "$default"}, where
            else:
                assert metric["Namespace"] == "AWS/SQS", where
    # SAM names the HTTP API's only stage $default unless a StageName says otherwise.
    assert "StageName" not in template["Resources"]["HttpApi"]["Properties"]


@pytest.mark.parametrize("logical_id", [*COUNT_ALARMS, "SubmitErrorsAlarm", "CallbackThrottlesAlarm"])
def test_count_alarms_fire_on_the_first_one_and_stay_quiet_without_data(
    template: dict[str, Any], logical_id: str
) -> None:
    # Given an alarm on a count of things that should not happen
    properties = alarms(template)[logical_id]

    # Then one in five minutes fires it, and a quiet period (no data) does not
    assert (properties["Statistic"], properties["Period"], properties["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (properties["ComparisonOperator"], properties["Threshold"]) == ("GreaterThanThreshold", 0)
    assert properties["TreatMissingData"] == "notBreaching"
    if logical_id in COUNT_ALARMS:
        assert (metric_stats(properties)[0]["Namespace"], properties["MetricName"]) == COUNT_ALARMS[
            logical_id
        ]


def expression_ids(expression: str) -> set[str]:
    return set(re.findall(r"\b[a-z][a-z0-9]*\b", expression)) - {"if", "fill"}


@pytest.mark.parametrize("logical_id", [*RATE_ALARMS, "CallbackClientErrorsAlarm"])
def test_rate_alarms_return_one_percentage_over_a_minimum_of_requests_or_tasks(
    template: dict[str, Any], logical_id: str
) -> None:
    # Given a metric-math alarm
    properties = alarms(template)[logical_id]
    queries = {query["Id"]: query for query in properties["Metrics"]}
    returned = [query for query in queries.values() if query["ReturnData"]]

    # Then it returns one expression, a percentage gated on a minimum sample, built only
    # from queries it defines, all over one period; no data is not a breach
    assert len(returned) == 1
    expression = returned[0]["Expression"]
    assert re.match(r"IF\(.+ >= (5|10), 100 \* FILL\(\w+, 0\) / \w+, 0\)$", expression), expression
    defined = set(queries)
    for query in queries.values():
        if "Expression" in query:
            assert expression_ids(query["Expression"]) <= defined, query
    periods = {query["MetricStat"]["Period"] for query in queries.values() if "MetricStat" in query}
    assert len(periods) == 1
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"
    assert properties["TreatMissingData"] == "notBreaching"
    assert properties["EvaluationPeriods"] == 1


@pytest.mark.parametrize("logical_id", list(RATE_ALARMS))
def test_task_rates_count_every_ending_and_take_their_threshold_from_a_parameter(
    template: dict[str, Any], logical_id: str
) -> None:
    # Given a task rate alarm, its counted outcome and its parameter
    metric, parameter_name, default = RATE_ALARMS[logical_id]
    properties = alarms(template)[logical_id]
    parameter = template["Parameters"][parameter_name]
    counted = {m["MetricName"] for m in metric_stats(properties)}

    # Then it divides its outcome by all four outcomes over 15 minutes, above a percentage
    # a user may set between 1 and 100
    assert counted == set(SERVICE_OUTCOMES)
    assert metric in counted
    assert {query["MetricStat"]["Period"] for query in properties["Metrics"] if "MetricStat" in query} == {
        900
    }
    assert properties["Threshold"] == {"Ref": parameter_name}
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (
        "Number",
        default,
        1,
        100,
    )


def test_alarms_survive_translation(template: dict[str, Any], translated: dict[str, Any]) -> None:
    # Given the template CloudFormation receives
    resources = translated["Resources"]

    # Then every alarm, the alarm topic and the dashboard are in it
    translated_alarms = {
        logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert translated_alarms == set(alarms(template))
    assert resources["AlarmsTopic"]["Type"] == "AWS::SNS::Topic"
    assert resources["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"
