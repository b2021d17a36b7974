"""The CloudWatch dashboard: its body, rendered as CloudFormation would with stand-in names,
is JSON that lays out the pipeline's flow, and every metric it names is one the code emits
or one AWS publishes for the stack's queues, functions and API."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from i2v.domain import Task, TaskStatus
from i2v.usecases.outcome import Endings
from local.cloudformation import PhysicalResource, TemplateEvaluator
from tests.template.cfn import environment, function_properties
from tests.template.tools import ROOT

GRID_WIDTH = 24
# The AWS metrics the dashboard and alarms may name, per namespace (the services' metric
# references: SQS, Lambda, and API Gateway's for HTTP APIs).
AWS_METRICS = {
    "AWS/SQS": {
        "NumberOfMessagesSent",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    },
    "AWS/Lambda": {"Errors", "Throttles", "Duration", "Invocations", "ConcurrentExecutions"},
    "AWS/ApiGateway": {"Count", "4xx", "5xx", "Latency", "IntegrationLatency"},
}
QUEUES = (
    "UploadsQueue",
    "FinalizeQueue",
    "PollQueue",
    "UploadsDeadLetterQueue",
    "FinalizeDeadLetterQueue",
    "PollDeadLetterQueue",
)

_LITERAL_METRIC = re.compile(r'add_metric\(\s*name="(\w+)"')
_TABLE_METRIC = re.compile(r"add_metric\(\s*name=([A-Z_]+)\[")


def emitted_metrics() -> set[str]:
    """Every metric name the functions' code passes to add_metric: literal names, and the
    values of a module's name table (OUTCOME_METRICS) when it passes one of those."""
    names: set[str] = set()
    sources = [*(ROOT / "layers" / "pipeline" / "i2v").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        names.update(_LITERAL_METRIC.findall(text))
        for table in _TABLE_METRIC.findall(text):
            body = re.search(rf"^{table}\b[^=]*= \{{(.*?)^\}}", text, flags=re.MULTILINE | re.DOTALL)
            assert body, f"{path}: add_metric takes names from {table}, which is not a literal table"
            names.update(re.findall(r':\s*"(\w+)"', body.group(1)))
    return names


def functions(template: dict[str, Any]) -> list[str]:
    return [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    ]


def stand_in(template: dict[str, Any]) -> Any:
    """Physical names for every resource of the template, and an error for any other."""

    def lookup(logical_id: str) -> PhysicalResource:
        assert logical_id in template["Resources"], f"the dashboard refers to no resource {logical_id}"
        return PhysicalResource(
            ref=f"phys-{logical_id}",
            attributes={
                "Arn": f"arn:aws:test:eu-west-1:123456789012:{logical_id}",
                "QueueName": f"queue-{logical_id}",
            },
        )

    return lookup


def render(template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The body as CloudFormation would render it: stand-in names, these parameters."""
    evaluator = TemplateEvaluator(
        template,
        stack_name="hh-test",
        region="eu-west-1",
        account_id="123456789012",
        resource_lookup=stand_in(template),
        parameter_overrides=parameters,
    )
    document: dict[str, Any] = json.loads(evaluator.properties("Dashboard")["DashboardBody"])
    return document


@pytest.fixture(scope="module")
def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    return render(template)


def widgets(dashboard: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [widget for widget in dashboard["widgets"] if widget["type"] == kind]


def metric_rows(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, str], str]]:
    """(namespace, metric, dimensions, widget title) of every metric a widget draws."""
    for widget in widgets(dashboard, "metric"):
        for row in widget["properties"]["metrics"]:
            names = [part for part in row if isinstance(part, str)]
            namespace, metric, pairs = names[0], names[1], names[2:]
            assert len(pairs) % 2 == 0, row
            yield (
                namespace,
                metric,
                dict(zip(pairs[::2], pairs[1::2], strict=True)),
                widget["properties"]["title"],
            )


def test_the_body_renders_to_json_widgets_on_the_grid_without_overlap(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    # Given the rendered body
    placed = dashboard["widgets"]

    # Then every widget sits inside the 24-column grid, no two overlap, and each names the
    # stack's region where it reads data
    assert template["Resources"]["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"
    cells: dict[tuple[int, int], str] = {}
    for widget in placed:
        x, y, width, height = (widget[key] for key in ("x", "y", "width", "height"))
        assert x >= 0 and x + width <= GRID_WIDTH and width > 0 and height > 0, widget
        for cell in ((column, row) for column in range(x, x + width) for row in range(y, y + height)):
            title = widget["properties"].get("title", widget["type"])
            assert cell not in cells, f"{title} overlaps {cells[cell]}"
            cells[cell] = title
        if widget["type"] in ("metric", "log"):
            assert widget["properties"]["region"] == "eu-west-1"


def test_every_metric_it_draws_is_emitted_by_the_code_or_published_by_aws(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    # Given what the code emits, in the namespace and with the service dimension Powertools
    # gives it, and the stack's queues and functions as rendered
    env = environment(template, "SubmitFunction")
    namespace, service = env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]
    emitted = emitted_metrics()
    queues = {f"queue-{logical_id}" for logical_id in QUEUES}
    function_names = {f"phys-{logical_id}" for logical_id in functions(template)}

    # Then each metric row names one of them, with the dimensions it is published under
    rows = list(metric_rows(dashboard))
    assert rows
    for row_namespace, metric, dimensions, title in rows:
        where = f"{title}: {row_namespace} {metric}"
        if row_namespace == namespace:
            assert metric in emitted, f"{where} is not emitted by the code"
            assert dimensions == {"service": service}, where
        elif row_namespace == "AWS/SQS":
            assert metric in AWS_METRICS[row_namespace], where
            assert set(dimensions) == {"QueueName"} and dimensions["QueueName"] in queues, where
        elif row_namespace == "AWS/Lambda":
            assert metric in AWS_METRICS[row_namespace], where
            assert set(dimensions) == {"FunctionName"} and dimensions["FunctionName"] in function_names, where
        else:
            assert row_namespace == "AWS/ApiGateway", where
            assert metric in AWS_METRICS[row_namespace], where
            assert dimensions == {"ApiId": "phys-HttpApi", "Stage": "$default"}, where


def test_it_shows_the_flow_the_issue_asks_for(template: dict[str, Any], dashboard: dict[str, Any]) -> None:
    # Given every (namespace, metric) drawn, and per function the Lambda metrics drawn
    drawn = {(namespace, metric) for namespace, metric, _, _ in metric_rows(dashboard)}
    per_function = {
        (metric, dimensions["FunctionName"])
        for namespace, metric, dimensions, _ in metric_rows(dashboard)
        if namespace == "AWS/Lambda"
    }
    depths = {
        dimensions["QueueName"]
        for _, metric, dimensions, _ in metric_rows(dashboard)
        if metric == "ApproximateNumberOfMessagesVisible"
    }

    # Then uploads, submissions, outcomes, generation time, spend, dead letters, webhooks
    # and each function's errors, throttles and duration are on it
    assert {
        ("AWS/SQS", "NumberOfMessagesSent"),
        ("HappyHorseI2V", "TasksSubmitted"),
        ("HappyHorseI2V", "TasksSucceeded"),
        ("HappyHorseI2V", "TasksFailed"),
        ("HappyHorseI2V", "TasksRejected"),
        ("HappyHorseI2V", "TasksTimedOut"),
        ("HappyHorseI2V", "GenerationSeconds"),
        ("HappyHorseI2V", "EstimatedCostUsd"),
        ("HappyHorseI2V", "BudgetSpentTodayUsd"),
        ("AWS/ApiGateway", "4xx"),
        ("AWS/ApiGateway", "5xx"),
    } <= drawn
    assert {
        f"queue-{q}" for q in ("UploadsDeadLetterQueue", "FinalizeDeadLetterQueue", "PollDeadLetterQueue")
    } <= depths
    for function in functions(template):
        assert {(m, f"phys-{function}") for m in ("Errors", "Throttles", "Duration")} <= per_function, (
            function
        )


def test_outcomes_per_route_come_from_the_functions_logs(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    # Given the log widgets, and the log group of each function
    groups = [
        function_properties(template, f)["LoggingConfig"]["LogGroup"]["Ref"] for f in functions(template)
    ]
    queries = {
        widget["properties"]["title"]: widget["properties"]["query"] for widget in widgets(dashboard, "log")
    }

    # Then both read every function's log group, and the per-route one counts the line
    # that announces an outcome by its route and status
    for query in queries.values():
        assert re.findall(r"SOURCE '([^']+)'", query) == [f"phys-{group}" for group in groups]
    query = queries["Outcomes per route"]
    assert "filter message = 'outcome notified'" in query
    assert "by route, status" in query


def test_the_line_the_route_widget_counts_carries_route_and_status(caplog: pytest.LogCaptureFixture) -> None:
    # Given a task of route fal that ended, and endings whose notification goes through
    task = Task.model_validate(
        {
            "task_id": "t-1",
            "status": "FAILED",
            "source": {"bucket": "b", "key": "incoming/cat.jpg"},
            "provider": {"name": "fal", "task_id": "p-1"},
            "received_at": 1.0,
            "updated_at": 2.0,
        }
    )
    sent: list[Task] = []
    # Only notify is reached when the publish succeeds: no store, no metrics.
    endings = Endings(store=None, notify=sent.append, metrics=None, clock=lambda: 3.0)  # type: ignore[arg-type]

    # When its outcome is announced
    with caplog.at_level(logging.INFO):
        assert endings.announce(task)

    # Then the line the query counts carries the fields it groups by
    announced = [record for record in caplog.records if record.getMessage() == "outcome notified"]
    assert sent == [task]
    assert [(vars(r).get("route"), vars(r).get("status")) for r in announced] == [
        ("fal", TaskStatus.FAILED.value)
    ]


@pytest.mark.parametrize("parameters", [{}, {"DailyBudgetUsd": "50"}], ids=["defaults", "with-a-budget"])
def test_the_alarm_widget_shows_every_alarm_the_stack_has(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    # Given the stack's alarms with these parameters (a conditional one exists only when its
    # condition holds) and the dashboard rendered with them
    evaluator = TemplateEvaluator(
        template,
        stack_name="hh-test",
        region="eu-west-1",
        account_id="123456789012",
        resource_lookup=stand_in(template),
        parameter_overrides=parameters,
    )
    existing = set(evaluator.logical_ids_of_type("AWS::CloudWatch::Alarm"))
    rendered = render(template, **parameters)

    # Then its alarm widget shows each of them, and no other
    shown = {
        arn.rsplit(":", 1)[1]
        for widget in widgets(rendered, "alarm")
        for arn in widget["properties"]["alarms"]
    }
    assert shown == existing


def test_the_spend_widget_draws_the_cap_only_on_a_stack_with_one(template: dict[str, Any]) -> None:
    # Given the dashboard without a cap, and with DailyBudgetUsd=50
    def spend(rendered: dict[str, Any]) -> dict[str, Any]:
        (found,) = [
            w for w in widgets(rendered, "metric") if w["properties"]["title"].startswith("Estimated spend")
        ]
        properties: dict[str, Any] = found["properties"]
        return properties

    # Then only the second draws the cap as a line, at its value
    assert "annotations" not in spend(render(template))
    assert spend(render(template, DailyBudgetUsd="50"))["annotations"] == {
        "horizontal": [{"label": "DailyBudgetUsd", "value": 50}]
    }


@pytest.mark.parametrize(
    ("cap", "alarmed"), [("0", False), ("0.0", False), ("0.00", False), ("0.5", True), ("50", True)]
)
def test_the_budget_alarm_exists_only_with_a_cap(template: dict[str, Any], cap: str, alarmed: bool) -> None:
    # Given the stack with DailyBudgetUsd as a user may type it
    evaluator = TemplateEvaluator(
        template,
        stack_name="hh-test",
        region="eu-west-1",
        account_id="123456789012",
        resource_lookup=stand_in(template),
        parameter_overrides={"DailyBudgetUsd": cap},
    )
    # Then the spend alarm is there exactly when the cap is above zero
    alarms = set(evaluator.logical_ids_of_type("AWS::CloudWatch::Alarm"))
    assert ("BudgetSpendWarningAlarm" in alarms) is alarmed
