"""The local stack's resources are the template's: names, keys, indexes, queues, wiring."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.stack import DEFAULT_TEMPLATE, LocalStack
from local.template import load_template

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(DEFAULT_TEMPLATE)


def properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return props


def test_the_task_table_has_the_templates_keys_indexes_and_ttl(
    stack: LocalStack, template: dict[str, Any]
) -> None:
    # Given the template's table
    expected = properties(template, "TasksTable")

    # When the local table is described
    table = stack.dynamodb.describe_table(TableName=stack.table)["Table"]
    ttl = stack.dynamodb.describe_time_to_live(TableName=stack.table)["TimeToLiveDescription"]

    # Then keys, attributes, indexes, billing and TTL are the template's
    assert table["KeySchema"] == expected["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table["GlobalSecondaryIndexes"]
    } == {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in expected["GlobalSecondaryIndexes"]
    }
    assert table["BillingModeSummary"]["BillingMode"] == expected["BillingMode"]
    assert ttl == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": expected["TimeToLiveSpecification"]["AttributeName"],
    }


def test_the_uploads_queue_and_bucket_notifications_follow_the_template(
    stack: LocalStack, template: dict[str, Any]
) -> None:
    # Given the template's queue, its parameters and the bucket's notification
    queue = properties(template, "UploadsQueue")
    max_receive = template["Parameters"]["MaxSubmitAttempts"]["Default"]
    (expected_notification,) = properties(template, "MediaBucket")["NotificationConfiguration"][
        "QueueConfigurations"
    ]

    # When the local queue and bucket are described
    attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.uploads_queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    notifications = stack.s3.get_bucket_notification_configuration(Bucket=stack.bucket)

    # Then visibility timeout, redrive and the S3 -> SQS notification are the template's
    assert attributes["VisibilityTimeout"] == str(queue["VisibilityTimeout"])
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == int(max_receive)
    assert stack.dead_letter_queue_url is not None
    assert redrive["deadLetterTargetArn"].rsplit(":", 1)[1] == stack.dead_letter_queue_url.rsplit("/", 1)[1]
    (notification,) = notifications["QueueConfigurations"]
    assert notification["QueueArn"] == attributes["QueueArn"]
    assert notification["Events"] == [expected_notification["Event"]]
    # S3 spells the rule names "Prefix"/"Suffix" in answers, moto as written; either way:
    assert [
        (rule["Name"].lower(), rule["Value"]) for rule in notification["Filter"]["Key"]["FilterRules"]
    ] == [(rule["Name"].lower(), rule["Value"]) for rule in expected_notification["Filter"]["S3Key"]["Rules"]]


def test_the_provider_secrets_are_where_the_functions_look(
    stack: LocalStack, template: dict[str, Any]
) -> None:
    # Given the secret names the template's SecretPrefix gives the primary route
    prefix = template["Parameters"]["SecretPrefix"]["Default"]

    # When they are read from the local Secrets Manager
    api_key = stack.secretsmanager.get_secret_value(SecretId=f"{prefix}magnific/api-key")
    webhook = stack.secretsmanager.get_secret_value(SecretId=f"{prefix}magnific/webhook-secret")

    # Then they hold what the simulator was given
    assert api_key["SecretString"] == stack.api_key
    assert webhook["SecretString"] == stack.webhook_secret
    assert stack.webhook_secret is not None and stack.webhook_secret.startswith("whsec_")


def test_each_function_runs_with_the_templates_environment_and_local_endpoints(
    stack: LocalStack, template: dict[str, Any]
) -> None:
    # Given the template's functions
    functions = [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    ]

    # When the local functions' settings are looked at
    local = {logical_id: stack.functions[logical_id].config for logical_id in functions}

    # Then each has the Globals and its own variables, resolved, with the local endpoints
    global_names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id, config in local.items():
        own = properties(template, logical_id).get("Environment", {}).get("Variables", {})
        assert global_names | set(own) <= set(config.environment), logical_id
        assert config.environment["TABLE_NAME"] == stack.table
        assert config.environment["BUCKET_NAME"] == stack.bucket
        assert config.environment["TOPIC_ARN"] == stack.topic_arn
        assert config.environment["AWS_ENDPOINT_URL"] == stack.moto.url
        assert config.environment["MAGNIFIC_BASE_URL"] == stack.simulator.url
        assert config.environment["WEBHOOK_BASE_URL"] == stack.gateway.url
        assert config.timeout_seconds == properties(template, logical_id)["Timeout"]
    assert local["SubmitFunction"].environment["UPLOADS_QUEUE_URL"] == stack.uploads_queue_url
