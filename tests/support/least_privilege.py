"""Least privilege read from real calls: the AWS calls that a test session's local stacks
recorded (local/lambda_worker.py, local/dispatcher.py), held against the policies that the
SAM-translated template gives each function, evaluated with each stack's own resource
names and parameters as CloudFormation would (local/cloudformation.py).

A grant is one (function, policy, statement Sid, action); it is used when a recorded call
of that function, in some stack, is allowed by it. A grant no call used needs a reason: a
`# least-privilege: ...` comment above its statement in the function's `Policies:` of
template.yaml, or, for the managed policies SAM attaches by itself, `MANAGED_POLICIES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from local.cloudformation import PhysicalResource, TemplateError, TemplateEvaluator
from tests.template.cfn import as_list, branches

REASON_TAG = "least-privilege:"
LAST_MODULE = Path(__file__).resolve().parents[1] / "test_least_privilege.py"
DESELECTED_MODULES = pytest.StashKey[set[str]]()
"""Test modules (relative to the repository) the session deselected tests of (tests/conftest.py)."""

LOG_REASON = (
    "the Lambda service writes the function's logs to its LoggingConfig log group with this "
    "role; the function's code calls no CloudWatch Logs API"
)
TRACE_REASON = (
    "Tracing: Active: the Lambda environment's X-Ray daemon sends the traces with this role; "
    "locally tracing is off (no daemon) and the code calls no X-Ray API"
)


@dataclass(frozen=True)
class ManagedPolicy:
    """An AWS managed policy's document (from AWS's managed policy reference) and why each
    action no local call can use is there."""

    statements: tuple[dict[str, Any], ...]
    reasons: Mapping[str, str]


_LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
# SAM attaches these to every function's role by itself: the basic execution role always,
# X-Ray's with Tracing: Active, the SQS one for each SQS event.
MANAGED_POLICIES: Mapping[str, ManagedPolicy] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": ManagedPolicy(
        statements=({"Effect": "Allow", "Action": list(_LOGS), "Resource": "*"},),
        reasons=dict.fromkeys(_LOGS, LOG_REASON),
    ),
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": ManagedPolicy(
        statements=(
            {
                "Effect": "Allow",
                "Action": [
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                    "xray:GetSamplingStatisticSummaries",
                ],
                "Resource": ["*"],
            },
        ),
        reasons=dict.fromkeys(
            (
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ),
            TRACE_REASON,
        ),
    ),
    # ReceiveMessage and DeleteMessage carry no reason: the local dispatcher makes them.
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": ManagedPolicy(
        statements=(
            {
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS],
                "Resource": "*",
            },
        ),
        reasons={
            "sqs:GetQueueAttributes": (
                "Lambda's event source mapping reads the queue's attributes when it is created "
                "and enabled (the local dispatcher is configured from the template instead); "
                "the functions' dead-letter path reads the queue's RedrivePolicy with it"
            ),
            **dict.fromkeys(_LOGS, LOG_REASON),
        },
    ),
}


@dataclass(frozen=True)
class Stack:
    """One local stack as it described itself in the session's log."""

    template: Path
    parameters: Mapping[str, str]
    functions: Mapping[str, Mapping[str, Any]]  # logical id -> name, arn, environment

    @property
    def region_and_account(self) -> tuple[str, str]:
        arn = str(next(iter(self.functions.values()))["arn"]).split(":")
        return arn[3], arn[4]


@dataclass(frozen=True)
class Call:
    """One distinct IAM request a function made in one stack (its calls deduplicated)."""

    stack: int
    function: str
    action: str
    resource: str
    operation: str
    caller: str


@dataclass(frozen=True)
class Grant:
    function: str
    policy: str
    sid: str
    action: str


@dataclass(frozen=True)
class Statement:
    grant: Grant
    resources: tuple[str, ...]
    conditional: bool

    def allows(self, action: str, resource: str) -> bool:
        # A statement with a Condition (kms:ViaService) does not allow a direct call.
        return (
            not self.conditional
            and iam_match(self.grant.action, action, case_sensitive=False)
            and any(iam_match(pattern, resource) for pattern in self.resources)
        )


@dataclass
class Session:
    stacks: list[Stack] = field(default_factory=list)
    calls: set[Call] = field(default_factory=set)
    foreign_lines: int = 0
    """Calls of functions no stack of this template described (component tests)."""


def iam_match(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: `*` any run of characters (`/` too), `?` one; nothing else is special."""
    expression = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(expression, value, 0 if case_sensitive else re.IGNORECASE) is not None


def read_session(log: Path, template: Path) -> Session:
    """The stacks of `template` the log describes and their functions' distinct requests."""
    session = Session()
    if not log.exists():
        return session
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    owners: dict[str, tuple[int, str]] = {}
    for line in lines:
        if line.get("kind") != "stack" or Path(line["template"]).resolve() != template.resolve():
            continue
        session.stacks.append(Stack(Path(line["template"]), line["parameters"], line["functions"]))
        for logical_id, function in line["functions"].items():
            owners[function["name"]] = (len(session.stacks) - 1, logical_id)
    for line in lines:
        if line.get("kind") == "stack":
            continue
        owner = owners.get(line["function"])
        if owner is None:
            session.foreign_lines += 1
            continue
        for request in line["iam"]:
            session.calls.add(
                Call(
                    stack=owner[0],
                    function=owner[1],
                    action=request["action"],
                    resource=request["resource"],
                    operation=line["operation"] + (" (presigned)" if line.get("presigned") else ""),
                    caller=line.get("caller", "function"),
                )
            )
    return session


def function_role(translated: Mapping[str, Any], function: str) -> Mapping[str, Any]:
    role = translated["Resources"][function]["Properties"]["Role"]
    if not (isinstance(role, dict) and "Fn::GetAtt" in role):
        raise TemplateError(f"{function}: its Role is not the one SAM made from its Policies")
    properties: Mapping[str, Any] = translated["Resources"][role["Fn::GetAtt"][0]]["Properties"]
    return properties


def _document_statements(document: Any) -> Iterator[Any]:
    yield from as_list(document["Statement"])


def all_grants(translated: Mapping[str, Any], function: str) -> list[Grant]:
    """Every grant of a function's role whatever the parameters: each side of every Fn::If."""
    role = function_role(translated, function)
    grants: list[Grant] = []
    for policy in role.get("Policies", []):
        for document in branches(policy["PolicyDocument"]):
            for node in _document_statements(document):
                for statement in branches(node):
                    grants.extend(
                        Grant(function, policy["PolicyName"], _sid(function, statement), action)
                        for action in as_list(statement["Action"])
                    )
    for arn in role.get("ManagedPolicyArns", []):
        name = managed_policy_name(arn)
        grants.extend(
            Grant(function, name, "", action)
            for statement in _managed(name).statements
            for action in as_list(statement["Action"])
        )
    return grants


def stack_statements(translated: Mapping[str, Any], stack: Stack, function: str) -> list[Statement]:
    """What a function's role allows in this stack: its policies evaluated with the stack's
    parameters and resource names, plus the managed policies' documents."""
    region, account = stack.region_and_account
    evaluator = TemplateEvaluator(
        translated,
        stack_name="least-privilege",
        region=region,
        account_id=account,
        resource_lookup=resource_lookup(translated, stack),
        parameter_overrides=stack.parameters,
    )
    role = function_role(translated, function)
    statements: list[Statement] = []
    for policy in evaluator.resolve(role.get("Policies", [])):
        for statement in _document_statements(policy["PolicyDocument"]):
            statements.extend(_statements(function, policy["PolicyName"], statement))
    for arn in evaluator.resolve(role.get("ManagedPolicyArns", [])):
        name = managed_policy_name(arn)
        for statement in _managed(name).statements:
            statements.extend(_statements(function, name, statement))
    return statements


def _statements(function: str, policy: str, statement: Mapping[str, Any]) -> Iterator[Statement]:
    unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
    if statement.get("Effect") != "Allow" or unsupported:
        raise TemplateError(f"{function}/{policy}: only Allow statements with Action and Resource are read")
    sid = "" if policy in _MANAGED_NAMES else _sid(function, statement)
    for action in as_list(statement["Action"]):
        yield Statement(
            Grant(function, policy, sid, str(action)),
            tuple(str(resource) for resource in as_list(statement["Resource"])),
            conditional="Condition" in statement,
        )


def _sid(function: str, statement: Mapping[str, Any]) -> str:
    if "Sid" not in statement:
        raise TemplateError(f"{function}: every statement needs a Sid, to find its reason comment")
    return str(statement["Sid"])


_MANAGED_NAMES = {arn.rsplit("/", 1)[1] for arn in MANAGED_POLICIES}


def managed_policy_name(arn: Any) -> str:
    return str(arn).rsplit("/", 1)[1]


def _managed(name: str) -> ManagedPolicy:
    for arn, policy in MANAGED_POLICIES.items():
        if arn.endswith("/" + name):
            return policy
    raise TemplateError(f"managed policy {name}: add its document and reasons to MANAGED_POLICIES")


def managed_reason(grant: Grant) -> str | None:
    return _managed(grant.policy).reasons.get(grant.action) if grant.policy in _MANAGED_NAMES else None


def resource_lookup(translated: Mapping[str, Any], stack: Stack) -> Callable[[str], PhysicalResource]:
    """A stack's resources as its functions' settings name them (`TABLE_NAME: !Ref TasksTable`),
    the others by the local stack's naming rule."""
    region, account = stack.region_and_account
    refs: dict[str, str] = {}
    for logical_id, function in stack.functions.items():
        variables = translated["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
        for name, value in variables.items():
            if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in translated["Resources"]:
                refs[value["Ref"]] = str(function["environment"][name])

    def lookup(logical_id: str) -> PhysicalResource:
        resource_type = translated["Resources"][logical_id]["Type"]
        if logical_id in refs:
            return _physical(resource_type, refs[logical_id], region, account)
        # No setting names it (a dead-letter queue): it stands as the name the local stack
        # generates for it, stack-LogicalId-<12 characters> (local/resources.py).
        name = f"*-{logical_id}-" + "?" * 12
        ref = f"*/{account}/{name}" if resource_type == "AWS::SQS::Queue" else name
        if resource_type == "AWS::SNS::Topic":
            ref = f"arn:aws:sns:{region}:{account}:{name}"
        return _physical(resource_type, ref, region, account)

    return lookup


def _physical(resource_type: str, ref: str, region: str, account: str) -> PhysicalResource:
    if resource_type == "AWS::S3::Bucket":
        return PhysicalResource(ref, {"Arn": f"arn:aws:s3:::{ref}"})
    if resource_type == "AWS::DynamoDB::Table":
        return PhysicalResource(ref, {"Arn": f"arn:aws:dynamodb:{region}:{account}:table/{ref}"})
    if resource_type == "AWS::SQS::Queue":
        owner, name = ref.rstrip("/").split("/")[-2:]
        return PhysicalResource(ref, {"Arn": f"arn:aws:sqs:{region}:{owner}:{name}", "QueueName": name})
    if resource_type == "AWS::SNS::Topic":
        return PhysicalResource(ref, {"TopicArn": ref, "TopicName": ref.rsplit(":", 1)[1]})
    raise TemplateError(f"a policy names a {resource_type}, which this check cannot name locally")


def reason_comments(template_text: str) -> dict[tuple[str, str], str]:
    """(function, Sid) -> the `# least-privilege: ...` comment above that statement (and the
    comment lines that follow it) in the function's `Policies:` block."""
    reasons: dict[tuple[str, str], str] = {}
    resource: str | None = None
    in_policies = False
    pending: list[str] | None = None
    for line in template_text.splitlines():
        if top := re.match(r"^  ([A-Za-z0-9]+):\s*$", line):
            resource, in_policies, pending = top[1], False, None
            continue
        if re.match(r"^      Policies:", line):
            in_policies = True
            continue
        if in_policies and re.match(r"^      [^ #]", line):
            in_policies = False
        if not in_policies or resource is None:
            continue
        comment = re.match(r"^\s*#\s?(.*)$", line)
        if comment and REASON_TAG in comment[1]:
            pending = [comment[1].split(REASON_TAG, 1)[1].strip()]
        elif comment and pending is not None:
            pending.append(comment[1].strip())
        elif sid := re.match(r"^\s*(?:-\s*)?Sid:\s*(\S+)", line):
            if pending is not None:
                reasons[(resource, sid[1])] = " ".join(pending)
            pending = None
    return reasons


@dataclass(frozen=True)
class Findings:
    ungranted: list[Call]
    """Calls no statement of their function's role allows, in their stack."""
    used: dict[Grant, int]
    """Each grant and how many distinct requests it allowed."""


def compare(translated: Mapping[str, Any], session: Session, functions: tuple[str, ...]) -> Findings:
    used: dict[Grant, int] = {
        grant: 0 for function in functions for grant in all_grants(translated, function)
    }
    ungranted: list[Call] = []
    evaluated = cache(lambda stack, function: stack_statements(translated, session.stacks[stack], function))
    for call in sorted(session.calls, key=lambda c: (c.function, c.action, c.resource)):
        allowing = [s for s in evaluated(call.stack, call.function) if s.allows(call.action, call.resource)]
        if not allowing:
            ungranted.append(call)
        for statement in allowing:
            used[statement.grant] = used.get(statement.grant, 0) + 1
    return Findings(ungranted, used)
