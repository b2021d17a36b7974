"""cfn-lint on the template as written and as SAM translates it, offline; no cycles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.template.cfn import find_cycle
from tests.template.tools import TEMPLATE, cfn_lint


def test_cfn_lint_accepts_the_sam_template() -> None:
    # Given the template as written
    # When cfn-lint checks it
    result = cfn_lint(TEMPLATE)

    # Then it reports nothing: no error, no warning
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_translation_leaves_plain_cloudformation(translated: dict[str, Any]) -> None:
    # Given the template translated by aws-sam-translator (offline)
    # Then no serverless resource or transform is left
    types = {resource["Type"] for resource in translated["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}
    assert "Transform" not in translated
    assert {"AWS::Lambda::EventSourceMapping", "AWS::ApiGatewayV2::Api", "AWS::Events::Rule"} <= types


def test_cfn_lint_accepts_the_translated_template(translated_path: Path) -> None:
    # Given the translated template
    # When cfn-lint checks it (E3004 is its circular-dependency rule)
    result = cfn_lint(translated_path)

    # Then it reports nothing
    assert result.returncode == 0, result.stdout + result.stderr


def test_translated_template_has_no_dependency_cycle(translated: dict[str, Any]) -> None:
    # Given the resources CloudFormation will create
    # When their references and DependsOn are followed
    cycle = find_cycle(translated["Resources"])

    # Then none leads back to where it started
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_sees_the_cycle_an_api_url_on_its_own_handler_would_make() -> None:
    # Given a function whose environment names the API that invokes it
    resources = {
        "Api": {"Properties": {"Target": {"Fn::Sub": "arn:${Handler.Arn}/invocations"}}},
        "Handler": {"Properties": {"Url": {"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}"}}},
        "Logs": {"DependsOn": "Handler", "Properties": {}},
    }

    # When the cycle finder follows the references
    cycle = find_cycle(resources)

    # Then it reports the loop
    assert cycle == ["Api", "Handler", "Api"]


def test_translation_keeps_the_queue_consumer_settings(translated: dict[str, Any]) -> None:
    # Given the event source mapping SAM made from the SQS event
    mapping = translated["Resources"]["SubmitFunctionUploads"]["Properties"]

    # Then batching, partial failures and bounded concurrency survived the translation
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SubmitMaxConcurrency"}}
    assert mapping["BatchSize"] == {"Ref": "SubmitBatchSize"}


def test_translated_functions_run_python_3_13_on_arm64_with_the_layer(
    translated: dict[str, Any],
) -> None:
    # Given the Lambda functions after translation
    functions = {
        logical_id: resource["Properties"]
        for logical_id, resource in translated["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    layer_ids = [
        logical_id
        for logical_id, resource in translated["Resources"].items()
        if resource["Type"] == "AWS::Lambda::LayerVersion"
    ]

    # Then each has the runtime, architecture and the pipeline layer from Globals
    assert set(functions) == {"SubmitFunction", "CallbackFunction", "ReconcileFunction", "AuditFunction"}
    assert len(layer_ids) == 1
    for properties in functions.values():
        assert properties["Runtime"] == "python3.13"
        assert properties["Architectures"] == ["arm64"]
        assert properties["Layers"] == [{"Ref": layer_ids[0]}]
        assert properties["TracingConfig"] == {"Mode": "Active"}
