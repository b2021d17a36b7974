"""Where the pipeline is: a deployed stack's CloudFormation outputs, or the file `make stack`
writes for the local one. Both give the same output names (template.yaml's Outputs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from i2v_cli.errors import CliError, NotFound, from_aws

DEFAULT_LOCAL_FILE = Path("out/local-stack.json")
LOCAL_FILE_VERSION = 1
# The outputs the CLI needs (the others are read if present); template.yaml names them.
REQUIRED_OUTPUTS = ("BucketName", "TableName", "TopicArn", "UploadsQueueUrl")
INCOMING_PREFIX = "incoming/"


@dataclass(frozen=True)
class StackInfo:
    """One stack's resources, and how to reach them (local: an endpoint and fake credentials)."""

    name: str
    region: str | None
    outputs: dict[str, str]
    endpoint_url: str | None = None
    credentials: dict[str, str] | None = field(default=None, repr=False)

    def output(self, name: str) -> str:
        try:
            return self.outputs[name]
        except KeyError:
            raise NotFound(f"stack {self.name!r} has no output {name!r}") from None

    @property
    def bucket(self) -> str:
        return self.output("BucketName")

    @property
    def table(self) -> str:
        return self.output("TableName")

    @property
    def topic_arn(self) -> str:
        return self.output("TopicArn")

    @property
    def uploads_queue_url(self) -> str:
        return self.output("UploadsQueueUrl")

    def dead_letter_queues(self) -> dict[str, tuple[str, str]]:
        """Each dead-letter queue by its short name: (its URL, its source queue's URL)."""
        pairs = {
            "uploads": ("DeadLetterQueueUrl", "UploadsQueueUrl"),
            "finalize": ("FinalizeDeadLetterQueueUrl", "FinalizeQueueUrl"),
            "poll": ("PollDeadLetterQueueUrl", "PollQueueUrl"),
        }
        return {name: (self.output(dlq), self.output(source)) for name, (dlq, source) in pairs.items()}


def _checked(info: StackInfo) -> StackInfo:
    missing = [name for name in REQUIRED_OUTPUTS if name not in info.outputs]
    if missing:
        raise NotFound(f"stack {info.name!r} has no outputs {missing}: is it this pipeline's stack?")
    return info


def from_cloudformation(cloudformation: Any, name: str) -> StackInfo:
    """The stack's outputs, by describe-stacks."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        # CloudFormation answers a missing stack with a ValidationError.
        if "does not exist" in str(error.response.get("Error", {}).get("Message", "")):
            raise NotFound(f"no CloudFormation stack named {name!r} in this account and region") from error
        raise from_aws(error) from error
    except BotoCoreError as error:
        raise from_aws(error) from error
    outputs = {str(o["OutputKey"]): str(o["OutputValue"]) for o in stacks[0].get("Outputs", [])}
    return _checked(StackInfo(name=name, region=cloudformation.meta.region_name, outputs=outputs))


def write_local_file(path: Path, info: StackInfo, **extra: Any) -> None:
    """What `make stack` leaves for the CLI (and for anyone with boto3 or the AWS CLI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"version": LOCAL_FILE_VERSION, **asdict(info), **extra}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def from_local_file(path: Path) -> StackInfo:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no local stack file at {path}: start one with `make stack`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CliError(f"cannot read the local stack file {path}: {error}") from error
    if not isinstance(document, dict) or document.get("version") != LOCAL_FILE_VERSION:
        raise CliError(f"{path} is not a local stack file of version {LOCAL_FILE_VERSION}")
    return _checked(
        StackInfo(
            name=str(document.get("name", "local")),
            region=document.get("region"),
            outputs={str(k): str(v) for k, v in (document.get("outputs") or {}).items()},
            endpoint_url=document.get("endpoint_url"),
            credentials=document.get("credentials"),
        )
    )
