"""Provider secrets, from Secrets Manager or SSM SecureString, cached between invocations."""

from __future__ import annotations

from typing import Literal

SecretStore = Literal["secretsmanager", "ssm"]


def get_secret(name: str, *, store: SecretStore, max_age: int) -> str:
    """The secret's current value. Powertools caches it for `max_age` seconds."""
    from aws_lambda_powertools.utilities import parameters

    if store == "ssm":
        value = parameters.get_parameter(name, decrypt=True, max_age=max_age)
    else:
        value = parameters.get_secret(name, max_age=max_age)
    if not isinstance(value, str) or not value:
        raise RuntimeError(f"secret {name!r} in {store} is empty or not a string")
    return value
