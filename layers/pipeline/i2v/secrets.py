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


def get_secret(name: str, *, store: SecretStore, max_age: int, force_fetch: bool = False) -> str:
    """The secret's current value. Powertools caches it for `max_age` seconds;
    `force_fetch` reads the store again (and refreshes the cache)."""
    provider = _provider(store, client(store))
    if store == "ssm":
        value = provider.get(name, decrypt=True, max_age=max_age, force_fetch=force_fetch)
    else:
        value = provider.get(name, max_age=max_age, force_fetch=force_fetch)
    return _checked(value, name, store)


def get_previous_secret(name: str, *, store: SecretStore) -> str | None:
    """The value a rotation replaced: Secrets Manager keeps it under the AWSPREVIOUS stage
    when a new value is put. None for a secret never rotated, and for SSM, whose history
    takes another permission (docs/operations.md, rotating the webhook secret)."""
    if store != "secretsmanager":
        return None
    sdk = client(store)
    try:
        # Not through Powertools: its cache key ignores the version stage.
        answer = sdk.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    except sdk.exceptions.ResourceNotFoundException:
        return None
    return _checked(answer.get("SecretString"), name, store)


def _checked(value: object, name: str, store: SecretStore) -> str:
    if not isinstance(value, str) or not value:
        raise RuntimeError(f"secret {name!r} in {store} is empty or not a string")
    return value
