"""What template.yaml promises, read straight from the YAML (no AWS, no tools venv)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from i2v.config import Settings, load_settings
from tests.template.cfn import (
    FUNCTIONS,
    SECRET_READERS,
    as_list,
    canonical,
    environment,
    function_properties,
    grants,
    policy_statements,
    references,
)
from tests.template.tools import ROOT

CONTRACT_IDS = {
    "MediaBucket": "AWS::S3::Bucket",
    "MediaBucketPolicy": "AWS::S3::BucketPolicy",
    "UploadsQueue": "AWS::SQS::Queue",
    "UploadsQueuePolicy": "AWS::SQS::QueuePolicy",
    "UploadsDeadLetterQueue": "AWS::SQS::Queue",
    "TasksTable": "AWS::DynamoDB::Table",
    "NotificationsTopic": "AWS::SNS::Topic",
    "NotificationsEmailSubscription": "AWS::SNS::Subscription",
    "PipelineLayer": "AWS::Serverless::LayerVersion",
    "SubmitFunction": "AWS::Serverless::Function",
    "CallbackFunction": "AWS::Serverless::Function",
    "ReconcileFunction": "AWS::Serverless::Function",
    "HttpApi": "AWS::Serverless::HttpApi",
}
BUCKET_SUFFIX = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
WEBHOOK_BASE_URL = {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
DENY_INSECURE_TRANSPORT = {"Bool": {"aws:SecureTransport": "false"}}
# Names the functions read that are not Settings fields: Powertools' and the runtime's own.
NON_SETTINGS_VARIABLES = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE",
    "LOG_LEVEL",
}


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical_id]
    return found


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = resource(template, logical_id)["Properties"]
    return found


def sub(text: str) -> str:
    return canonical({"Fn::Sub": text})


def get_att(logical_id: str, attribute: str) -> str:
    return canonical({"Fn::GetAtt": [logical_id, attribute]})


def ref(name: str) -> str:
    return canonical({"Ref": name})


def resolve_with_defaults(template: dict[str, Any], value: Any) -> str:
    """An environment value as deployed with default parameters; resource ids stay symbolic."""
    if isinstance(value, str):
        return value
    if set(value) == {"Ref"} and value["Ref"] in template["Parameters"]:
        return str(template["Parameters"][value["Ref"]]["Default"])
    return f"resolved-at-deploy:{canonical(value)}"


# --- contract and runtime ---------------------------------------------------------------


def test_logical_ids_and_types_are_the_contract(template: dict[str, Any]) -> None:
    # Given the resources other code finds by logical id
    # Then each exists with its type
    actual = {logical_id: resource(template, logical_id)["Type"] for logical_id in CONTRACT_IDS}
    assert actual == CONTRACT_IDS
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


def test_functions_and_layer_target_python_3_13_on_arm64(template: dict[str, Any]) -> None:
    # Given the functions with Globals applied, and the layer
    layer = resource(template, "PipelineLayer")

    # Then every one of them is built for and runs on python3.13 / arm64
    for logical_id in FUNCTIONS:
        function = function_properties(template, logical_id)
        assert function["Runtime"] == "python3.13", logical_id
        assert function["Architectures"] == ["arm64"], logical_id
        assert function["Tracing"] == "Active", logical_id
        assert function["Layers"] == [{"Ref": "PipelineLayer"}], logical_id
        assert function["LoggingConfig"]["LogFormat"] == "JSON", logical_id
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Properties"]["ContentUri"] == "layers/pipeline/"
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


@pytest.mark.parametrize(
    ("logical_id", "code_uri", "handler", "timeout", "memory"),
    [
        ("SubmitFunction", "functions/submit/", "submit.handler", 120, 256),
        ("CallbackFunction", "functions/callback/", "callback.handler", 600, 512),
        ("ReconcileFunction", "functions/reconcile/", "reconcile.handler", 300, 256),
        ("AuditFunction", "functions/audit/", "audit.handler", 300, 256),
    ],
)
def test_function_code_handler_and_limits(
    template: dict[str, Any], logical_id: str, code_uri: str, handler: str, timeout: int, memory: int
) -> None:
    # Given one function
    function = function_properties(template, logical_id)

    # Then it points at its handler module, which exists and defines the handler
    assert (function["CodeUri"], function["Handler"]) == (code_uri, handler)
    module, name = handler.split(".")
    source = (ROOT / code_uri / f"{module}.py").read_text(encoding="utf-8")
    assert f"def {name}(" in source
    assert (function["Timeout"], function["MemorySize"]) == (timeout, memory)


# --- bucket ---------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_retained(template: dict[str, Any]) -> None:
    # Given the media bucket
    bucket = resource(template, "MediaBucket")
    properties = bucket["Properties"]

    # Then nothing in it can be made public, it is encrypted, and stack deletion keeps it
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    [encryption] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert "VersioningConfiguration" not in properties
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_bucket_aborts_incomplete_multipart_uploads_after_a_day(template: dict[str, Any]) -> None:
    # Given the bucket's lifecycle rules
    rules = props(template, "MediaBucket")["LifecycleConfiguration"]["Rules"]

    # Then one enabled rule cleans up abandoned multipart uploads (failed video downloads)
    assert any(
        rule["Status"] == "Enabled"
        and rule.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1}
        and "Prefix" not in rule
        and "Filter" not in rule
        for rule in rules
    )


def test_bucket_policy_denies_every_request_without_tls(template: dict[str, Any]) -> None:
    # Given the bucket policy
    policy = props(template, "MediaBucketPolicy")

    # Then it denies any S3 action on the bucket and its objects over plain HTTP
    assert policy["Bucket"] == {"Ref": "MediaBucket"}
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Condition"] == DENY_INSECURE_TRANSPORT
    assert {canonical(r) for r in statement["Resource"]} == {
        get_att("MediaBucket", "Arn"),
        sub("${MediaBucket.Arn}/*"),
    }


def test_uploads_under_incoming_notify_the_queue_whatever_their_suffix(
    template: dict[str, Any],
) -> None:
    # Given the bucket's notifications
    notifications = props(template, "MediaBucket")["NotificationConfiguration"]

    # Then every object created under incoming/ goes to the uploads queue, and only that
    assert set(notifications) == {"QueueConfigurations"}
    [queue] = notifications["QueueConfigurations"]
    assert queue["Event"] == "s3:ObjectCreated:*"
    assert queue["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert queue["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "incoming/"}]


def test_bucket_and_queue_policy_agree_on_the_bucket_name_without_a_cycle(
    template: dict[str, Any],
) -> None:
    # Given the bucket's name and the queue policy's condition on its sender
    bucket = resource(template, "MediaBucket")
    queue_policy = props(template, "UploadsQueuePolicy")
    [allow] = [s for s in queue_policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    source_arn, variables = allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]

    # Then both build the name from the stack id, the same way
    assert bucket["Properties"]["BucketName"] == {"Fn::Join": ["-", ["i2v-media", BUCKET_SUFFIX]]}
    assert source_arn == "arn:${AWS::Partition}:s3:::i2v-media-${StackUuid}"
    assert variables == {"StackUuid": BUCKET_SUFFIX}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # And the policy exists before S3 checks the destination, without naming the bucket
    assert bucket["DependsOn"] == "UploadsQueuePolicy"
    assert "MediaBucket" not in references(queue_policy, template["Resources"])


# --- queues ---------------------------------------------------------------------------------


def test_uploads_queue_outlasts_submit_retries_and_drains_to_a_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    # Given the uploads queue and its dead-letter queue
    queue = props(template, "UploadsQueue")
    dead_letters = props(template, "UploadsDeadLetterQueue")
    submit_timeout = function_properties(template, "SubmitFunction")["Timeout"]

    # Then a message stays invisible for six submit timeouts, and gives up to the DLQ
    assert queue["VisibilityTimeout"] >= 6 * submit_timeout
    assert queue["MessageRetentionPeriod"] == 4 * 86_400
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxSubmitAttempts"},
    }
    assert dead_letters["MessageRetentionPeriod"] == 14 * 86_400
    assert queue["SqsManagedSseEnabled"] is True
    assert dead_letters["SqsManagedSseEnabled"] is True


def test_queue_policy_lets_only_s3_send_and_only_over_tls(template: dict[str, Any]) -> None:
    # Given the uploads queue's policy
    policy = props(template, "UploadsQueuePolicy")
    statements = policy["PolicyDocument"]["Statement"]

    # Then S3 may send to it, and nobody may reach it over plain HTTP
    assert policy["Queues"] == [{"Ref": "UploadsQueue"}]
    [allow] = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    [deny] = [s for s in statements if s["Effect"] == "Deny"]
    assert (deny["Principal"], deny["Action"]) == ("*", "sqs:*")
    assert deny["Condition"] == DENY_INSECURE_TRANSPORT


# --- events ---------------------------------------------------------------------------------


def test_submit_consumes_uploads_in_batches_with_partial_failures_and_bounded_concurrency(
    template: dict[str, Any],
) -> None:
    # Given the submit function's event source
    [event] = function_properties(template, "SubmitFunction")["Events"].values()
    parameters = template["Parameters"]

    # Then it reads the uploads queue, reports failed items only, and caps its concurrency
    assert event["Type"] == "SQS"
    assert event["Properties"] == {
        "Queue": {"Fn::GetAtt": ["UploadsQueue", "Arn"]},
        "BatchSize": {"Ref": "SubmitBatchSize"},
        "MaximumBatchingWindowInSeconds": 1,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": {"Ref": "SubmitMaxConcurrency"}},
    }
    assert parameters["SubmitBatchSize"]["Default"] == 5
    concurrency = parameters["SubmitMaxConcurrency"]
    assert (concurrency["MinValue"], concurrency["MaxValue"], concurrency["Default"]) == (2, 1000, 5)


@pytest.mark.parametrize(
    ("event_name", "path"),
    [("Webhook", "/callbacks/{route}/{task_id}"), ("LegacyWebhook", "/callbacks/{task_id}")],
)
def test_callback_answers_post_callbacks_route_task_id_on_the_http_api(
    template: dict[str, Any], event_name: str, path: str
) -> None:
    # Given the callback function's webhook events
    event = function_properties(template, "CallbackFunction")["Events"][event_name]

    # Then the provider's webhook reaches it through the stack's HTTP API, naming its route
    # (the route-less path is the one Magnific callback URLs had before)
    assert event["Type"] == "HttpApi"
    assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    assert event["Properties"]["Method"] == "POST"
    assert event["Properties"]["Path"] == path
    assert event["Properties"].get("PayloadFormatVersion", "2.0") == "2.0"


def test_callback_takes_finalize_orders_one_at_a_time_with_bounded_concurrency(
    template: dict[str, Any],
) -> None:
    # Given the callback function's second event source and its queue
    events = function_properties(template, "CallbackFunction")["Events"]
    finalize = events["Finalize"]
    queue = props(template, "FinalizeQueue")
    timeout = function_properties(template, "CallbackFunction")["Timeout"]

    # Then it reads the finalize queue one video at a time, reports partial failures, and
    # never runs more downloads at once than the stack parameter says
    assert set(events) == {"Webhook", "LegacyWebhook", "Finalize"}
    assert finalize["Type"] == "SQS"
    assert finalize["Properties"]["Queue"] == {"Fn::GetAtt": ["FinalizeQueue", "Arn"]}
    assert finalize["Properties"]["BatchSize"] == 1
    assert finalize["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert finalize["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "FinalizeMaxConcurrency"}
    }
    # And a message is hidden for six times the function's timeout (Lambda's advice), and
    # reaches the dead-letter queue only after more deliveries than the finalizer tries
    assert queue["VisibilityTimeout"] == 6 * timeout
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["FinalizeDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 10,
    }
    assert template["Parameters"]["MaxFinalizeAttempts"]["MaxValue"] < 10
    assert props(template, "FinalizeDeadLetterQueue")["MessageRetentionPeriod"] == 1_209_600
    assert queue["SqsManagedSseEnabled"] is True


def test_http_api_is_throttled_on_its_default_stage(template: dict[str, Any]) -> None:
    # Given the HTTP API
    api = props(template, "HttpApi")

    # Then it has no named stage (the webhook URL has no stage path) and default throttling
    assert "StageName" not in api
    assert api["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }


def test_reconciler_polls_from_the_poll_queue_with_bounded_concurrency(template: dict[str, Any]) -> None:
    # Given the reconcile function's queue event and the poll queue
    function = function_properties(template, "ReconcileFunction")
    polls = function["Events"]["Polls"]["Properties"]
    queue = props(template, "PollQueue")

    # Then status checks arrive in batches, with partial failures, never more invocations
    # at once than the parameter (which the pacing divides each route's rate by)
    assert polls["Queue"] == {"Fn::GetAtt": ["PollQueue", "Arn"]}
    assert polls["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert polls["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "PollMaxConcurrency"}}
    assert function["Environment"]["Variables"]["POLL_MAX_CONCURRENCY"] == {"Ref": "PollMaxConcurrency"}
    assert queue["VisibilityTimeout"] == 6 * function["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["PollDeadLetterQueue", "Arn"]}


def test_reconciler_runs_on_an_eventbridge_schedule(template: dict[str, Any]) -> None:
    # Given the reconcile function and its schedule event
    function = function_properties(template, "ReconcileFunction")
    event = function["Events"]["Schedule"]

    # Then EventBridge invokes it on the configured schedule, every 5 minutes by default,
    # and a failed run waits for the next one instead of overlapping it with retries
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == {"Ref": "ReconcileSchedule"}
    assert template["Parameters"]["ReconcileSchedule"]["Default"] == "rate(5 minutes)"
    assert function["EventInvokeConfig"] == {"MaximumRetryAttempts": 0}


# --- table and topic ------------------------------------------------------------------------


def test_task_table_is_on_demand_recoverable_encrypted_with_ttl(template: dict[str, Any]) -> None:
    # Given the task table
    table = resource(template, "TasksTable")
    properties = table["Properties"]

    # Then it costs nothing idle, can be restored, and forgets finished tasks by TTL
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert properties["KeySchema"] == [{"AttributeName": "task_id", "KeyType": "HASH"}]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_task_table_indexes_open_tasks_and_sources(template: dict[str, Any]) -> None:
    # Given the table's indexes and attribute definitions
    properties = props(template, "TasksTable")
    indexes = {index["IndexName"]: index for index in properties["GlobalSecondaryIndexes"]}
    attributes = {a["AttributeName"]: a["AttributeType"] for a in properties["AttributeDefinitions"]}

    # Then the reconciler's sparse index and the operators' index exist, fully projected
    assert set(indexes) == {"open-tasks", "by-source"}
    assert indexes["open-tasks"]["KeySchema"] == [
        {"AttributeName": "open_shard", "KeyType": "HASH"},
        {"AttributeName": "open_since", "KeyType": "RANGE"},
    ]
    assert indexes["by-source"]["KeySchema"] == [
        {"AttributeName": "source_uri", "KeyType": "HASH"},
        {"AttributeName": "received_at", "KeyType": "RANGE"},
    ]
    assert all(index["Projection"] == {"ProjectionType": "ALL"} for index in indexes.values())
    assert attributes == {
        "task_id": "S",
        "open_shard": "S",
        "open_since": "N",
        "source_uri": "S",
        "received_at": "N",
    }


def test_email_subscription_exists_only_when_an_address_is_given(template: dict[str, Any]) -> None:
    # Given the topic and its email subscription
    subscription = resource(template, "NotificationsEmailSubscription")
    condition = template["Conditions"][subscription["Condition"]]

    # Then the subscription depends on a non-empty NotificationEmail
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "NotificationEmail"}, ""]}]}
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "NotificationsTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "NotificationEmail"},
    }
    assert template["Parameters"]["NotificationEmail"]["Default"] == ""
    assert props(template, "NotificationsTopic")["KmsMasterKeyId"] == "alias/aws/sns"


# --- parameters and environment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("Routes", "magnific"),
        ("RouteSettings", ""),
        ("SecretStore", "secretsmanager"),
        ("SecretPrefix", "happyhorse/"),
        ("PollMaxConcurrency", 2),
        ("BreakerThreshold", 5),
        ("BreakerWindowSeconds", 60),
        ("BreakerCooldownSeconds", 300),
        ("DefaultPrompt", ""),
        ("DefaultResolution", "1080P"),
        ("DefaultDuration", 5),
        ("SubmitBatchSize", 5),
        ("SubmitMaxConcurrency", 5),
        ("MaxSubmitAttempts", 8),
        ("VideoAllowedHosts", ""),
        ("VideoMaxBytes", 2_147_483_648),
        ("FinalizeMaxConcurrency", 10),
        ("MaxFinalizeAttempts", 5),
        ("FinalizeStaleSeconds", 4500),
        ("ReconcileAfterSeconds", 600),
        ("TaskDeadlineSeconds", 7200),
        ("ReconcileSchedule", "rate(5 minutes)"),
        ("RetentionDays", 90),
        ("PresignExpirySeconds", 3600),
        ("NotificationEmail", ""),
        ("LogLevel", "INFO"),
    ],
)
def test_parameter_default(template: dict[str, Any], name: str, default: object) -> None:
    # Given one stack parameter
    parameter = template["Parameters"][name]

    # Then it has the agreed default
    assert parameter["Default"] == default


def test_every_parameter_is_described_defaulted_and_used(template: dict[str, Any]) -> None:
    # Given all parameters and everything outside the Parameters section
    rest = {key: value for key, value in template.items() if key != "Parameters"}
    used = references(rest, template["Parameters"])

    # Then each explains itself, deploys without input, and matters somewhere
    for name, parameter in template["Parameters"].items():
        assert parameter.get("Description"), name
        assert "Default" in parameter, name
    assert used == set(template["Parameters"])
    assert template["Parameters"]["SecretStore"]["AllowedValues"] == ["secretsmanager", "ssm"]
    assert template["Parameters"]["DefaultResolution"]["AllowedValues"] == ["720P", "1080P"]
    duration = template["Parameters"]["DefaultDuration"]
    assert (duration["MinValue"], duration["MaxValue"]) == (3, 15)
    assert "docs/providers.md" in template["Parameters"]["Routes"]["Description"]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_required_setting_is_set(template: dict[str, Any], logical_id: str) -> None:
    # Given the settings that have no default, and a function's environment
    required = {
        field.alias for field in Settings.model_fields.values() if field.is_required() and field.alias
    }
    variables = environment(template, logical_id)

    # Then the function sets every one of them
    assert required
    assert required <= set(variables)


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_environment_names_only_known_settings(template: dict[str, Any], logical_id: str) -> None:
    # Given the names a function's environment sets
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    names = set(environment(template, logical_id))

    # Then each is a setting (no typo) or Powertools' own, and the local-only flags are absent
    assert names - known <= NON_SETTINGS_VARIABLES
    assert not names & {"VIDEO_ALLOW_HTTP", "VIDEO_ALLOW_PRIVATE_NETWORKS"}


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_environment_with_default_parameters_loads_as_settings(
    template: dict[str, Any], logical_id: str
) -> None:
    # Given a function's environment as deployed with default parameters
    env = {
        name: resolve_with_defaults(template, value)
        for name, value in environment(template, logical_id).items()
    }

    # When the function reads its settings at cold start
    settings = load_settings(env)

    # Then they validate and carry the stack's defaults
    assert settings.routes == ("magnific",)
    assert settings.video_allowed_hosts == ()
    assert settings.default_options.resolution == "1080P"
    assert settings.default_options.duration == 5
    assert settings.secret_store == "secretsmanager"
    assert (settings.incoming_prefix, settings.videos_prefix) == ("incoming/", "videos/")


def test_a_download_ends_before_its_function_and_a_lost_order_is_reissued_after_its_retries(
    template: dict[str, Any],
) -> None:
    # Given the function that downloads videos, with default parameters
    env = {
        name: resolve_with_defaults(template, value)
        for name, value in environment(template, "CallbackFunction").items()
    }
    settings = load_settings(env)
    timeout = function_properties(template, "CallbackFunction")["Timeout"]

    # Then a download gives up before Lambda stops the function, and the reconciler
    # re-issues an order only after the longest a live one could take to retry
    assert settings.video_download_timeout_seconds < timeout
    attempts = settings.max_finalize_attempts
    longest_retry = attempts * timeout + (attempts - 1) * settings.finalize_backoff_max_seconds
    assert settings.finalize_stale_seconds > longest_retry


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_environment_fits_lambdas_4_kb_even_with_the_longest_default_prompt(
    template: dict[str, Any], logical_id: str
) -> None:
    # Given a function's environment with default parameters, the longest ASCII default
    # prompt allowed, and 150 bytes for every name or ARN only known at deploy time
    parameters = template["Parameters"]

    def size(value: Any) -> int:
        if isinstance(value, str):
            return len(value.encode())
        if set(value) == {"Ref"} and value["Ref"] == "DefaultPrompt":
            return int(parameters["DefaultPrompt"]["MaxLength"])
        if set(value) == {"Ref"} and value["Ref"] in parameters:
            return len(str(parameters[value["Ref"]]["Default"]).encode())
        return 150

    # When Lambda adds up names and values
    total = sum(len(name) + size(value) for name, value in environment(template, logical_id).items())

    # Then the function can be created
    assert total <= 4096


def test_core_environment_points_at_the_stack_resources(template: dict[str, Any]) -> None:
    # Given the environment every function shares
    variables = template["Globals"]["Function"]["Environment"]["Variables"]

    # Then the resource names come from the resources themselves
    assert variables["TABLE_NAME"] == {"Ref": "TasksTable"}
    assert variables["BUCKET_NAME"] == {"Ref": "MediaBucket"}
    assert variables["TOPIC_ARN"] == {"Ref": "NotificationsTopic"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "happyhorse-i2v"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "HappyHorseI2V"


def test_only_submit_gets_the_webhook_base_url_of_the_default_stage(template: dict[str, Any]) -> None:
    # Given each function's environment
    submit = environment(template, "SubmitFunction")

    # Then submit builds webhook URLs from the API's default-stage URL, as the output shows it;
    # the callback function cannot have it: the API that invokes it would depend on it
    assert submit["WEBHOOK_BASE_URL"] == WEBHOOK_BASE_URL
    assert submit["UPLOADS_QUEUE_URL"] == {"Ref": "UploadsQueue"}
    assert template["Outputs"]["WebhookBaseUrl"]["Value"] == WEBHOOK_BASE_URL
    assert "WEBHOOK_BASE_URL" not in environment(template, "CallbackFunction")


# --- permissions ----------------------------------------------------------------------------


def secret_slots(suffix: str) -> set[tuple[str, str]]:
    """The five route slots of one secret's grants, in both stores (see the template)."""
    grants: set[tuple[str, str]] = set()
    for slot in range(5):
        route = {"Fn::Select": [slot, {"Fn::Split": [",", {"Fn::Sub": "${Routes},-,-,-,-"}]}]}
        for action, arn in (
            (
                "secretsmanager:GetSecretValue",
                "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
                f"${{SecretPrefix}}${{Route}}/{suffix}-??????",
            ),
            (
                "ssm:GetParameter",
                f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter${{SecretPrefix}}${{Route}}/{suffix}",
            ),
        ):
            grants.add((action, canonical({"Fn::Sub": [arn, {"Route": route}]})))
    grants.add(("kms:Decrypt", sub("arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*")))
    return grants


EXPECTED_GRANTS = {
    "SubmitFunction": {
        ("s3:GetObject", sub("${MediaBucket.Arn}/incoming/*")),
        ("s3:ListBucket", get_att("MediaBucket", "Arn")),
        ("dynamodb:GetItem", get_att("TasksTable", "Arn")),
        ("dynamodb:PutItem", get_att("TasksTable", "Arn")),
        ("dynamodb:UpdateItem", get_att("TasksTable", "Arn")),
        ("sns:Publish", ref("NotificationsTopic")),
        ("events:PutEvents", get_att("EventBus", "Arn")),
        ("sqs:ChangeMessageVisibility", get_att("UploadsQueue", "Arn")),
        ("sqs:SendMessage", get_att("PollQueue", "Arn")),
        ("sqs:SendMessage", get_att("UploadsDeadLetterQueue", "Arn")),
        *secret_slots("api-key"),
    },
    "CallbackFunction": {
        ("dynamodb:GetItem", get_att("TasksTable", "Arn")),
        ("dynamodb:UpdateItem", get_att("TasksTable", "Arn")),
        ("sqs:SendMessage", get_att("FinalizeQueue", "Arn")),
        ("sqs:ChangeMessageVisibility", get_att("FinalizeQueue", "Arn")),
        ("sqs:SendMessage", get_att("FinalizeDeadLetterQueue", "Arn")),
        ("s3:PutObject", sub("${MediaBucket.Arn}/videos/*")),
        ("s3:AbortMultipartUpload", sub("${MediaBucket.Arn}/videos/*")),
        ("s3:GetObject", sub("${MediaBucket.Arn}/videos/*")),
        ("sns:Publish", ref("NotificationsTopic")),
        ("events:PutEvents", get_att("EventBus", "Arn")),
        *secret_slots("*"),
    },
    "ReconcileFunction": {
        ("dynamodb:Query", sub("${TasksTable.Arn}/index/open-tasks")),
        ("dynamodb:UpdateItem", get_att("TasksTable", "Arn")),
        ("sqs:SendMessage", get_att("FinalizeQueue", "Arn")),
        ("sqs:SendMessage", get_att("UploadsQueue", "Arn")),  # a deferred task, due, resumed
        ("sqs:SendMessage", get_att("PollQueue", "Arn")),
        ("sqs:ChangeMessageVisibility", get_att("PollQueue", "Arn")),
        ("sqs:SendMessage", get_att("PollDeadLetterQueue", "Arn")),
        ("sns:Publish", ref("NotificationsTopic")),
        ("events:PutEvents", get_att("EventBus", "Arn")),
        *secret_slots("api-key"),
    },
    "AuditFunction": {
        ("s3:ListBucket", get_att("MediaBucket", "Arn")),
        ("s3:GetObject", sub("${MediaBucket.Arn}/videos/*")),
        ("dynamodb:Query", sub("${TasksTable.Arn}/index/by-source")),
        ("dynamodb:Query", sub("${TasksTable.Arn}/index/open-tasks")),
        ("dynamodb:GetItem", get_att("TasksTable", "Arn")),
        ("dynamodb:PutItem", get_att("TasksTable", "Arn")),
        ("dynamodb:UpdateItem", get_att("TasksTable", "Arn")),
        ("sqs:SendMessage", get_att("UploadsQueue", "Arn")),
        ("sqs:GetQueueAttributes", get_att("UploadsDeadLetterQueue", "Arn")),
        ("sns:Publish", ref("NotificationsTopic")),
        ("events:PutEvents", get_att("EventBus", "Arn")),
    },
}


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_function_is_granted_exactly_what_its_step_needs(template: dict[str, Any], logical_id: str) -> None:
    # Given everything a function's inline policies allow (both secret stores)
    granted = grants(template, logical_id)

    # Then it is exactly the list for its step: its table calls, its bucket prefix, the
    # topic, the queue, and its own secret; nothing else, and no action wildcard
    assert granted == EXPECTED_GRANTS[logical_id]
    assert not [action for action, _ in granted if "*" in action]


@pytest.mark.parametrize("logical_id", SECRET_READERS)
def test_secret_access_follows_the_secret_store(template: dict[str, Any], logical_id: str) -> None:
    # Given the function's statements, with the Fn::If on the secret store unexpanded
    [policy] = function_properties(template, logical_id)["Policies"]
    conditional = [s for s in policy["Statement"] if set(s) == {"Fn::If"}]
    [decrypt] = [s for s in policy_statements(template, logical_id) if s["Action"] == "kms:Decrypt"]

    # Then one statement reads the secret from Secrets Manager or from SSM, never both (the
    # other conditional one is the optional event bus's grant)
    [statement] = [s for s in conditional if s["Fn::If"][0] != "HasEventBus"]
    condition, when_secrets_manager, when_ssm = statement["Fn::If"]
    assert condition == "UseSecretsManager"
    assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": "SecretStore"}, "secretsmanager"]}
    assert when_secrets_manager["Action"] == "secretsmanager:GetSecretValue"
    assert when_ssm["Action"] == "ssm:GetParameter"
    # And keys are usable only through the chosen store
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "${SecretStore}.${AWS::Region}.${AWS::URLSuffix}"}}
    }


@pytest.mark.parametrize("store", ["secretsmanager", "ssm"])
def test_each_function_reads_only_the_configured_routes_secrets(template: dict[str, Any], store: str) -> None:
    # Given a stack configured with two routes, evaluated as CloudFormation would
    from local.cloudformation import PhysicalResource, TemplateEvaluator

    evaluator = TemplateEvaluator(
        template,
        stack_name="s",
        region="eu-west-1",
        account_id="111122223333",
        resource_lookup=lambda logical_id: PhysicalResource(ref=logical_id, attributes={"Arn": logical_id}),
        parameter_overrides={"Routes": "dashscope,fal", "SecretPrefix": "/hh/", "SecretStore": store},
    )
    action = "secretsmanager:GetSecretValue" if store == "secretsmanager" else "ssm:GetParameter"
    service = "secretsmanager" if store == "secretsmanager" else "ssm"

    for logical_id, secrets in {
        "SubmitFunction": {"api-key"},
        "CallbackFunction": {"*"},
        "ReconcileFunction": {"api-key"},
    }.items():
        statements = evaluator.resolve(function_properties(template, logical_id)["Policies"])[0]["Statement"]
        arns = {arn for s in statements if s["Action"] == action for arn in as_list(s["Resource"])}
        # Then its secret ARNs name those two routes' secrets and no other route's
        suffix = "-??????" if store == "secretsmanager" else ""
        head = f"arn:aws:{service}:eu-west-1:111122223333:{'secret:' if service == 'secretsmanager' else 'parameter'}/hh/"
        expected = {
            f"{head}{route}/{secret}{suffix}" for route in ("dashscope", "fal", "-") for secret in secrets
        }
        assert arns == expected, logical_id


def test_no_statement_reaches_beyond_the_stack(template: dict[str, Any]) -> None:
    # Given every statement of every function
    statements = [s for f in FUNCTIONS for s in policy_statements(template, f)]
    known = {**template["Resources"], **template["Parameters"]}
    allowed = {
        "TasksTable",
        "MediaBucket",
        "NotificationsTopic",
        "EventBus",
        "UploadsQueue",
        "FinalizeQueue",
        "PollQueue",
        "UploadsDeadLetterQueue",
        "FinalizeDeadLetterQueue",
        "PollDeadLetterQueue",
        "Routes",
        "SecretPrefix",
    }

    for statement in statements:
        # Then KMS keys are reachable only through the secret store's service
        if statement["Action"] == "kms:Decrypt":
            assert set(statement["Condition"]["StringEquals"]) == {"kms:ViaService"}
            continue
        # And everything else is built from the table, the bucket, the topic, the queue or
        # a secret's name
        for value in as_list(statement["Resource"]):
            mentioned = references(value, known)
            assert mentioned, canonical(value)
            assert mentioned <= allowed, canonical(value)


# --- outputs and samconfig ------------------------------------------------------------------


def test_outputs_give_operators_the_names_they_need(template: dict[str, Any]) -> None:
    # Given the stack outputs
    outputs = {name: output["Value"] for name, output in template["Outputs"].items()}

    # Then each names the resource it describes
    assert outputs == {
        "BucketName": {"Ref": "MediaBucket"},
        "WebhookBaseUrl": WEBHOOK_BASE_URL,
        "TopicArn": {"Ref": "NotificationsTopic"},
        "EventBusName": {"Ref": "EventBus"},
        "TableName": {"Ref": "TasksTable"},
        "UploadsQueueUrl": {"Ref": "UploadsQueue"},
        "PollQueueUrl": {"Ref": "PollQueue"},
        "PollDeadLetterQueueUrl": {"Ref": "PollDeadLetterQueue"},
        "DeadLetterQueueUrl": {"Ref": "UploadsDeadLetterQueue"},
        "FinalizeQueueUrl": {"Ref": "FinalizeQueue"},
        "FinalizeDeadLetterQueueUrl": {"Ref": "FinalizeDeadLetterQueue"},
        "AlarmsTopicArn": {"Ref": "AlarmsTopic"},
        "DashboardUrl": {
            "Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home"
            "?region=${AWS::Region}#dashboards/dashboard/${Dashboard}"
        },
    }


def test_samconfig_builds_cached_and_deploys_the_named_stack_with_a_changeset() -> None:
    # Given samconfig.toml
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    default = config["default"]

    # Then builds are cached and parallel, and deploys confirm a changeset of happyhorse-i2v
    assert config["version"] == 0.1
    assert default["global"]["parameters"]["stack_name"] == "happyhorse-i2v"
    assert default["build"]["parameters"] == {"cached": True, "parallel": True}
    deploy = default["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True
