"""Provider secrets, from Secrets Manager or SSM SecureString, cached between invocations."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from i2v.aws import client

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

SecretStore = Literal["secretsmanager", "ssm"]


@cache
def _provider(store: SecretStore, sdk_client: Any) -> SecretsProvider | SSMProvider:
    # Powertools' own default provider opens a second boto3 session, which loads botocore's
    # endpoint and service data again; this one shares the functions' client (and session).
    # One provider per client, so a fresh client (tests) starts with an empty cache.
    from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

    if store == "ssm":
        return SSMProvider(boto3_client=sdk_client)
    return SecretsProvider(boto3_client=sdk_client)


def get_secret(name: str, *, store: SecretStore, max_age: int) -> str:
    """The secret's current value. Powertools caches it for `max_age` seconds."""
    provider = _provider(store, client(store))
    if store == "ssm":
        value = provider.get(name, decrypt=True, max_age=max_age)
    else:
        value = provider.get(name, max_age=max_age)
    if not isinstance(value, str) or not value:
        raise RuntimeError(f"secret {name!r} in {store} is empty or not a string")
    return value
