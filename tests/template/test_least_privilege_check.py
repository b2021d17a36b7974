"""The least-privilege check's reading of the translated template (tests/support/least_privilege.py):
calls held against a stack's evaluated policies, IAM wildcards, reasons beside statements."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.least_privilege import (
    Call,
    Session,
    Stack,
    all_grants,
    compare,
    iam_match,
    managed_reason,
    reason_comments,
)
from tests.template.tools import TEMPLATE

REGION, ACCOUNT = "eu-west-1", "111122223333"


def local_name(resource_type: str, logical_id: str) -> str:
    """What a resource's Ref gives in this made-up stack."""
    if resource_type == "AWS::SQS::Queue":
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/s-{logical_id}"
    if resource_type == "AWS::SNS::Topic":
        return f"arn:aws:sns:{REGION}:{ACCOUNT}:s-{logical_id}"
    return f"s-{logical_id.lower()}"


def stack(translated: dict[str, Any], parameters: dict[str, str]) -> Stack:
    functions = {}
    for logical_id in ("SubmitFunction", "CallbackFunction", "ReconcileFunction"):
        variables = translated["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
        environment = {
            name: local_name(translated["Resources"][value["Ref"]]["Type"], value["Ref"])
            for name, value in variables.items()
            if isinstance(value, dict) and value.get("Ref") in translated["Resources"]
        }
        functions[logical_id] = {
            "name": f"s-{logical_id}",
            "arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:s-{logical_id}",
            "environment": environment,
        }
    return Stack(TEMPLATE, parameters, functions)


def session_of(translated: dict[str, Any], *calls: tuple[str, str, str], **parameters: str) -> Session:
    return Session(
        stacks=[stack(translated, parameters)],
        calls={Call(0, function, action, resource, "op", "function") for function, action, resource in calls},
    )


def test_a_call_inside_the_grant_uses_it_and_one_outside_is_not_granted(translated: dict[str, Any]) -> None:
    # Given the submit function reading an upload and, wrongly, a video
    session = session_of(
        translated,
        ("SubmitFunction", "s3:GetObject", "arn:aws:s3:::s-mediabucket/incoming/cat.png"),
        ("SubmitFunction", "s3:GetObject", "arn:aws:s3:::s-mediabucket/videos/cat/t.mp4"),
        (
            "SubmitFunction",
            "dynamodb:Query",
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/s-taskstable/index/by-source",
        ),
    )

    # When they are compared with its role in that stack
    findings = compare(translated, session, ("SubmitFunction",))

    # Then the upload read used ReadUploads; the video read and the index query are not granted
    assert sorted((c.action, c.resource.rsplit(":", 1)[1]) for c in findings.ungranted) == [
        ("dynamodb:Query", "table/s-taskstable/index/by-source"),
        ("s3:GetObject", "s-mediabucket/videos/cat/t.mp4"),
    ]
    [read_uploads] = [g for g in findings.used if g.sid == "ReadUploads"]
    assert findings.used[read_uploads] == 1


def test_secrets_are_granted_for_the_stacks_routes_only(translated: dict[str, Any]) -> None:
    head = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:hh/"
    session = session_of(
        translated,
        ("ReconcileFunction", "secretsmanager:GetSecretValue", head + "fal/api-key-AbCdEf"),
        ("ReconcileFunction", "secretsmanager:GetSecretValue", head + "magnific/api-key-AbCdEf"),
        ("ReconcileFunction", "secretsmanager:GetSecretValue", head + "fal/webhook-secret-AbCdEf"),
        Routes="dashscope,fal",
        SecretPrefix="hh/",
    )
    findings = compare(translated, session, ("ReconcileFunction",))
    assert sorted(c.resource.removeprefix(head) for c in findings.ungranted) == [
        "fal/webhook-secret-AbCdEf",
        "magnific/api-key-AbCdEf",
    ]


def test_a_conditional_grant_allows_no_direct_call_and_managed_policies_count(
    translated: dict[str, Any],
) -> None:
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:s-UploadsQueue"
    session = session_of(
        translated,
        ("SubmitFunction", "kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"),
        ("SubmitFunction", "sqs:ReceiveMessage", queue),
    )
    findings = compare(translated, session, ("SubmitFunction",))
    # kms:Decrypt is granted only through the secret store (kms:ViaService)
    assert [c.action for c in findings.ungranted] == ["kms:Decrypt"]
    # and the event source mapping's receive is SAM's SQS execution role's
    [receive] = [g for g, uses in findings.used.items() if uses and g.action == "sqs:ReceiveMessage"]
    assert receive.policy == "AWSLambdaSQSQueueExecutionRole"
    assert managed_reason(receive) is None


def test_every_grant_is_listed_from_both_sides_of_the_secret_store_condition(
    translated: dict[str, Any],
) -> None:
    actions = {grant.action for grant in all_grants(translated, "CallbackFunction")}
    assert {"secretsmanager:GetSecretValue", "ssm:GetParameter", "logs:PutLogEvents"} <= actions


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("arn:aws:s3:::b/incoming/*", "arn:aws:s3:::b/incoming/a/b.png", True),
        ("arn:aws:s3:::b/incoming/*", "arn:aws:s3:::b/videos/a.mp4", False),
        ("arn:x:secret:p/api-key-??????", "arn:x:secret:p/api-key-AbCdEf", True),
        ("arn:x:secret:p/api-key-??????", "arn:x:secret:p/api-key-AbCdEfG", False),
        ("arn:[x]", "arn:x", False),
        ("*", "anything/at:all", True),
    ],
)
def test_iam_wildcards(pattern: str, value: str, matches: bool) -> None:
    assert iam_match(pattern, value) is matches


def test_a_reason_is_the_comment_above_a_statement_in_its_functions_policies() -> None:
    text = """\
Resources:
  SubmitFunction:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            # Why the statement exists.
            # least-privilege: used only when
            #   an upload is deleted first.
            - Sid: TellMissingUploads
              Effect: Allow
            - Sid: Notify
      Environment:
        # least-privilege: not in a policy
  CallbackFunction:
    Properties:
      Policies:
        - Statement:
            - Sid: Notify
"""
    assert reason_comments(text) == {
        ("SubmitFunction", "TellMissingUploads"): "used only when an upload is deleted first."
    }
