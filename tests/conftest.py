"""Test-wide settings: fake AWS credentials, no tracing, fresh per-process caches."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Set before anything imports boto3 or Powertools. Tests never reach real AWS: moto
# intercepts in-process, and the local stack points at moto's server on loopback. Only
# the opt-in e2e suite (E2E_STACK_NAME set) keeps the caller's real credentials.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
if not os.environ.get("E2E_STACK_NAME"):
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
for name, value in {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "happyhorse-i2v-test",
    "POWERTOOLS_METRICS_NAMESPACE": "HappyHorseI2VTest",
    "POWERTOOLS_DEV": "false",
}.items():
    os.environ[name] = value
os.environ.pop("AWS_ENDPOINT_URL", None)


@pytest.fixture(autouse=True)
def fresh_process_caches() -> Iterator[None]:
    """Each test gets its own settings, clients and cached secrets, like a cold start."""
    from aws_lambda_powertools.utilities import parameters

    from i2v import aws, config, wiring

    def clear() -> None:
        config.settings.cache_clear()
        aws.client.cache_clear()
        for factory in (
            wiring.task_store,
            wiring.source_store,
            wiring.notifier,
            wiring.provider,
            wiring.route_settings,
            wiring.poller,
        ):
            factory.cache_clear()
        parameters.clear_caches()

    clear()
    yield
    clear()
