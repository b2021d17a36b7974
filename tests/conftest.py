"""Test-wide settings: fake AWS credentials, no tracing, fresh per-process caches."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


def pytest_configure(config: pytest.Config) -> None:
    """Every local stack of the session also records its functions' AWS calls in one log,
    which the least-privilege test (tests/test_least_privilege.py) reads at the end."""
    from local.lambda_worker import SESSION_AWS_CALL_LOG

    folder = Path(tempfile.mkdtemp(prefix="i2v-session-calls-"))
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.environ[SESSION_AWS_CALL_LOG] = str(folder / "aws-calls.jsonl")


def pytest_deselected(items: list[pytest.Item]) -> None:
    from tests.support.least_privilege import DESELECTED_MODULES

    for item in items:
        deselected = item.config.stash.setdefault(DESELECTED_MODULES, set())
        deselected.add(str(item.path.relative_to(item.config.rootpath)))


# The suites that start local stacks (the quick bench's run them in its subprocess) and the
# test that reads their calls: with `pytest -n 2 --dist loadgroup` (make test) they run on
# one worker, in order, one session log for them all, while the other worker takes the
# in-process tests beside them.
STACK_SUITES = (
    "tests/integration/",
    "tests/contract/",
    "tests/adversarial/test_callbacks_http.py",
    "tests/adversarial/test_fuzz.py",
    "tests/unit/test_bench_quick.py",
    "tests/test_least_privilege.py",
)
CHECKOV_TESTS = "tests/template/test_checkov.py"


def pytest_itemcollected(item: pytest.Item) -> None:
    """The suites that start local stacks in one xdist group, checkov's tests in another
    (their module fixture scans once). Marked as each item is collected: xdist reads the
    groups in its own collection hook, before a trylast one could add them."""
    path = str(item.path.relative_to(item.config.rootpath))
    if path.startswith(STACK_SUITES):
        item.add_marker(pytest.mark.xdist_group("local-stacks"))
    elif path == CHECKOV_TESTS:
        item.add_marker(pytest.mark.xdist_group("checkov"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The least-privilege test last, after every suite that starts local stacks."""
    from tests.support.least_privilege import LAST_MODULE

    items.sort(key=lambda item: item.path == LAST_MODULE)
