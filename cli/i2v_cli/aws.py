"""boto3 clients for one stack; boto3 is imported on first use, so `i2v --help` does not pay for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from i2v_cli.errors import CliError, from_aws
from i2v_cli.stack import StackInfo, from_cloudformation, from_local_file

# The SDK's own retries, bounded: an operator waits for an answer, not for minutes of backoff.
_RETRIES = {"mode": "standard", "max_attempts": 3}


@contextmanager
def aws_errors() -> Iterator[None]:
    """botocore's exceptions as the CLI's clear errors (and exit codes)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise from_aws(error) from error
    except Boto3Error as error:
        # The managed transfer re-raises the call's ClientError as S3UploadFailedError.
        cause = error.__context__ if isinstance(error.__context__, ClientError) else error
        raise from_aws(cause) from error


class Aws:
    """The clients of one stack, made on first use."""

    def __init__(self, session: Any, stack: StackInfo) -> None:
        from botocore.config import Config

        self.session = session
        self.stack = stack
        self._config = Config(retries=_RETRIES)

    @cache  # noqa: B019 - one Aws per command run
    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.stack.endpoint_url, config=self._config)

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def sns(self) -> Any:
        return self.client("sns")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")


def connect(
    *, stack_name: str | None, local_file: Path | None, region: str | None, profile: str | None
) -> Aws:
    """The stack named (its CloudFormation outputs) or the local one (its file)."""
    import boto3

    with aws_errors():
        if local_file is not None:
            info = from_local_file(local_file)
            credentials = info.credentials or {}
            session = boto3.session.Session(
                aws_access_key_id=credentials.get("aws_access_key_id"),
                aws_secret_access_key=credentials.get("aws_secret_access_key"),
                aws_session_token=credentials.get("aws_session_token"),
                region_name=info.region,
            )
            return Aws(session, info)
        if not stack_name:
            raise CliError("which stack? give --stack NAME (or I2V_STACK), or --local for `make stack`'s")
        session = boto3.session.Session(profile_name=profile, region_name=region or _default_region())
        cloudformation = session.client("cloudformation")
        return Aws(session, from_cloudformation(cloudformation, stack_name))


def _default_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
