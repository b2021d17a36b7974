"""template.yaml's AWS resources, created in moto from their own Properties.

A resource is created the first time something refers to it (another resource's
property, a function's environment), so dependencies come first without a hand-kept
order. Properties the local stack does not apply are logged, so a template change that
the local stack would silently ignore is seen.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.cloudformation import PhysicalResource, TemplateError, TemplateEvaluator

log = logging.getLogger(__name__)

# Properties that only matter in a real account (access, retention over days, tags).
_NOT_APPLIED_LOCALLY: dict[str, frozenset[str]] = {
    "AWS::S3::Bucket": frozenset({"LifecycleConfiguration", "Tags"}),
    "AWS::SQS::Queue": frozenset({"Tags"}),
    "AWS::DynamoDB::Table": frozenset({"Tags", "DeletionProtectionEnabled"}),
    "AWS::SNS::Topic": frozenset({"Tags"}),
}
_SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "FifoQueue",
    "ContentBasedDeduplication",
)
_SQS_JSON_ATTRIBUTES = ("RedrivePolicy", "RedriveAllowPolicy")
_SNS_ATTRIBUTES = ("DisplayName", "KmsMasterKeyId", "FifoTopic", "ContentBasedDeduplication")
_GSI_KEYS = ("IndexName", "KeySchema", "Projection")
_CREATED_IN_MOTO = ("AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::SNS::Topic")


@dataclass(frozen=True)
class FunctionSpec:
    """A function of the template with its Globals merged and its values resolved."""

    logical_id: str
    function_name: str
    function_arn: str
    code_dir: Path
    handler: str
    timeout_seconds: int
    memory_mb: int
    layer_dirs: tuple[Path, ...]
    environment: Mapping[str, str]
    logging_config: Mapping[str, Any]
    events: Mapping[str, Mapping[str, Any]]


def cloudformation_name(stack_name: str, logical_id: str, max_length: int) -> str:
    """A generated physical name in CloudFormation's style: stack-LogicalId-RANDOMSUFFIX."""
    suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12))
    prefix = f"{stack_name}-{logical_id}"[: max_length - len(suffix) - 1]
    return f"{prefix}-{suffix}"


def merge_globals(global_properties: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge, lists concatenate, the resource's scalars win."""
    merged = dict(global_properties)
    for key, value in properties.items():
        inherited = merged.get(key)
        if isinstance(inherited, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_globals(inherited, value)
        elif isinstance(inherited, list) and isinstance(value, list):
            merged[key] = [*inherited, *value]
        else:
            merged[key] = value
    return merged


class LocalResources:
    """Creates the template's buckets, queues, tables and topics in moto on first use."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        template_dir: Path,
        clients: Mapping[str, Any],
        stack_name: str,
        region: str,
        account_id: str,
        parameter_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self._template_dir = template_dir
        self._clients = clients
        self._stack_name = stack_name
        self._region = region
        self._account_id = account_id
        self._physical: dict[str, PhysicalResource] = {}
        self._creating: set[str] = set()
        self.evaluator = TemplateEvaluator(
            template,
            stack_name=stack_name,
            region=region,
            account_id=account_id,
            resource_lookup=self.physical,
            parameter_overrides=parameter_overrides,
        )
        self._creators = {
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::SNS::Topic": self._create_topic,
            "AWS::Serverless::Function": self._name_function,
            "AWS::Serverless::LayerVersion": self._name_layer,
        }

    def create_all(self) -> None:
        """Create every bucket, queue, table and topic of the template."""
        for resource_type in _CREATED_IN_MOTO:
            for logical_id in self.evaluator.logical_ids_of_type(resource_type):
                self.physical(logical_id)

    def physical(self, logical_id: str) -> PhysicalResource:
        """What a Ref / Fn::GetAtt of `logical_id` gives; creates the resource if need be."""
        if logical_id in self._physical:
            return self._physical[logical_id]
        if logical_id in self._creating:
            raise TemplateError(f"{logical_id} refers to itself through its properties")
        resource_type = self.evaluator.resource_type(logical_id)
        self._creating.add(logical_id)
        try:
            creator = self._creators.get(resource_type, self._stand_in)
            physical = creator(logical_id)
        finally:
            self._creating.discard(logical_id)
        self._physical[logical_id] = physical
        return physical

    # -- resources that exist in moto ---------------------------------------------------

    def _properties(self, logical_id: str, applied: set[str]) -> dict[str, Any]:
        properties = self.evaluator.properties(logical_id)
        resource_type = self.evaluator.resource_type(logical_id)
        ignored = set(properties) - applied - _NOT_APPLIED_LOCALLY.get(resource_type, frozenset())
        if ignored:
            log.warning("%s: properties not applied locally: %s", logical_id, sorted(ignored))
        return properties

    def _create_bucket(self, logical_id: str) -> PhysicalResource:
        s3 = self._clients["s3"]
        properties = self._properties(
            logical_id,
            {
                "BucketName",
                "PublicAccessBlockConfiguration",
                "OwnershipControls",
                "BucketEncryption",
                "VersioningConfiguration",
                "NotificationConfiguration",
            },
        )
        name = properties.get("BucketName") or cloudformation_name(self._stack_name, logical_id, 63).lower()
        location = (
            {}
            if self._region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": self._region}}
        )
        s3.create_bucket(Bucket=name, **location)
        if "PublicAccessBlockConfiguration" in properties:
            s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"],
            )
        if "OwnershipControls" in properties:
            s3.put_bucket_ownership_controls(
                Bucket=name, OwnershipControls={"Rules": properties["OwnershipControls"]["Rules"]}
            )
        if "BucketEncryption" in properties:
            rules = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={"Rules": [_encryption_rule(r) for r in rules]},
            )
        if "VersioningConfiguration" in properties:
            s3.put_bucket_versioning(
                Bucket=name,
                VersioningConfiguration={"Status": properties["VersioningConfiguration"]["Status"]},
            )
        if "NotificationConfiguration" in properties:
            # moto answers this with an s3:TestEvent on each destination, as S3 does.
            s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration=_notification_configuration(
                    logical_id, properties["NotificationConfiguration"]
                ),
            )
        arn = f"arn:aws:s3:::{name}"
        return PhysicalResource(
            ref=name,
            attributes={
                "Arn": arn,
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{self._region}.amazonaws.com",
            },
        )

    def _create_queue(self, logical_id: str) -> PhysicalResource:
        sqs = self._clients["sqs"]
        properties = self._properties(logical_id, {"QueueName", *_SQS_ATTRIBUTES, *_SQS_JSON_ATTRIBUTES})
        name = properties.get("QueueName") or cloudformation_name(self._stack_name, logical_id, 80)
        if str(properties.get("FifoQueue", "")).lower() == "true" and not name.endswith(".fifo"):
            name = f"{name[:75]}.fifo"
        attributes = {key: _attribute_text(properties[key]) for key in _SQS_ATTRIBUTES if key in properties}
        for key in _SQS_JSON_ATTRIBUTES:
            if key in properties:
                value = properties[key]
                attributes[key] = value if isinstance(value, str) else json.dumps(value)
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _create_table(self, logical_id: str) -> PhysicalResource:
        dynamodb = self._clients["dynamodb"]
        properties = self._properties(
            logical_id,
            {
                "TableName",
                "KeySchema",
                "AttributeDefinitions",
                "GlobalSecondaryIndexes",
                "BillingMode",
                "SSESpecification",
                "TimeToLiveSpecification",
                "PointInTimeRecoverySpecification",
            },
        )
        name = properties.get("TableName") or cloudformation_name(self._stack_name, logical_id, 255)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": properties["KeySchema"],
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        if "GlobalSecondaryIndexes" in properties:
            request["GlobalSecondaryIndexes"] = [
                {key: index[key] for key in _GSI_KEYS if key in index}
                for index in properties["GlobalSecondaryIndexes"]
            ]
        if "SSESpecification" in properties:
            sse = properties["SSESpecification"]
            request["SSESpecification"] = {"Enabled": _boolean(sse.get("SSEEnabled", False))}
        table = dynamodb.create_table(**request)["TableDescription"]
        if "TimeToLiveSpecification" in properties:
            ttl = properties["TimeToLiveSpecification"]
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"],
                    "Enabled": _boolean(ttl["Enabled"]),
                },
            )
        if "PointInTimeRecoverySpecification" in properties:
            recovery = properties["PointInTimeRecoverySpecification"]
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": _boolean(recovery.get("PointInTimeRecoveryEnabled", False))
                },
            )
        return PhysicalResource(ref=name, attributes={"Arn": table["TableArn"]})

    def _create_topic(self, logical_id: str) -> PhysicalResource:
        sns = self._clients["sns"]
        properties = self._properties(logical_id, {"TopicName", *_SNS_ATTRIBUTES})
        name = properties.get("TopicName") or cloudformation_name(self._stack_name, logical_id, 256)
        attributes = {key: _attribute_text(properties[key]) for key in _SNS_ATTRIBUTES if key in properties}
        arn = sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        return PhysicalResource(ref=arn, attributes={"TopicArn": arn, "TopicName": name})

    # -- resources that only need a name locally ----------------------------------------

    def _name_function(self, logical_id: str) -> PhysicalResource:
        explicit = self.evaluator.resolve(
            self.evaluator.resources[logical_id].get("Properties", {}).get("FunctionName")
        )
        name = explicit or cloudformation_name(self._stack_name, logical_id, 64)
        arn = f"arn:aws:lambda:{self._region}:{self._account_id}:function:{name}"
        return PhysicalResource(ref=name, attributes={"Arn": arn})

    def _name_layer(self, logical_id: str) -> PhysicalResource:
        explicit = self.evaluator.resolve(
            self.evaluator.resources[logical_id].get("Properties", {}).get("LayerName")
        )
        name = explicit or logical_id
        return PhysicalResource(ref=f"arn:aws:lambda:{self._region}:{self._account_id}:layer:{name}:1")

    def _stand_in(self, logical_id: str) -> PhysicalResource:
        """An id for a resource with no local counterpart (an API id, a log group)."""
        identifier = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        return PhysicalResource(
            ref=identifier,
            attributes={"Arn": f"arn:aws:local:{self._region}:{self._account_id}:{logical_id}/{identifier}"},
        )

    # -- functions ------------------------------------------------------------------------

    def function_specs(self) -> list[FunctionSpec]:
        return [
            self._function_spec(logical_id)
            for logical_id in self.evaluator.logical_ids_of_type("AWS::Serverless::Function")
        ]

    def _function_spec(self, logical_id: str) -> FunctionSpec:
        evaluator = self.evaluator
        global_properties = evaluator.template.get("Globals", {}).get("Function", {})
        merged = merge_globals(global_properties, evaluator.resources[logical_id].get("Properties", {}))
        physical = self.physical(logical_id)
        variables = evaluator.resolve(merged.get("Environment", {})).get("Variables", {})
        return FunctionSpec(
            logical_id=logical_id,
            function_name=physical.ref,
            function_arn=physical.attributes["Arn"],
            code_dir=(self._template_dir / str(evaluator.resolve(merged["CodeUri"]))).resolve(),
            handler=str(evaluator.resolve(merged["Handler"])),
            # SAM's defaults when neither Globals nor the function sets them.
            timeout_seconds=int(evaluator.resolve(merged.get("Timeout", 3))),
            memory_mb=int(evaluator.resolve(merged.get("MemorySize", 128))),
            layer_dirs=tuple(self._layer_dir(layer) for layer in merged.get("Layers", [])),
            environment={str(k): _attribute_text(v) for k, v in variables.items()},
            logging_config=evaluator.resolve(merged.get("LoggingConfig", {})),
            events=evaluator.resolve(merged.get("Events", {})),
        )

    def _layer_dir(self, layer: Any) -> Path:
        """The code of a layer the template builds (a Ref to its LayerVersion)."""
        logical_id = layer.get("Ref") if isinstance(layer, Mapping) else None
        if not logical_id or self.evaluator.resource_type(logical_id) != "AWS::Serverless::LayerVersion":
            raise TemplateError(f"layer {layer!r}: only layers built from this template run locally")
        content = self.evaluator.resolve(self.evaluator.resources[logical_id]["Properties"]["ContentUri"])
        return (self._template_dir / str(content)).resolve()


def _boolean(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _attribute_text(value: Any) -> str:
    """A property value as AWS APIs and environment variables spell it."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _encryption_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault.
    converted = {key: value for key, value in rule.items() if key != "ServerSideEncryptionByDefault"}
    if "ServerSideEncryptionByDefault" in rule:
        converted["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
    return converted


def _notification_configuration(logical_id: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration in the S3 API's spelling (queues only)."""
    unsupported = set(configuration) - {"QueueConfigurations"}
    if unsupported:
        raise TemplateError(
            f"{logical_id}: only QueueConfigurations notifications run locally, not {sorted(unsupported)}"
        )
    queues = []
    for queue in configuration["QueueConfigurations"]:
        converted: dict[str, Any] = {"QueueArn": queue["Queue"], "Events": [queue["Event"]]}
        rules = queue.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            converted["Filter"] = {
                "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
            }
        queues.append(converted)
    return {"QueueConfigurations": queues}
