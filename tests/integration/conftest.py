"""One local stack for the whole integration package: the tests use their own upload keys.

Settings that keep the suite quick: a 1 s submit backoff, a reconciler every second for
tasks unchanged for RECONCILE_AFTER_SECONDS, and small simulated videos.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from local.simulators.magnific import Faults, MagnificSimulator
from local.stack import LocalStack

RECONCILE_AFTER_SECONDS = 5


@pytest.fixture(scope="package")
def function_log() -> Iterator[Path]:
    """Everything the functions and the simulator log, for tests that read it."""
    with tempfile.NamedTemporaryFile(prefix="i2v-functions-", suffix=".log") as log:
        yield Path(log.name)


@pytest.fixture(scope="package")
def aws_call_log() -> Iterator[Path]:
    """Every AWS call the functions make, one JSON line each (local/lambda_worker.py)."""
    with tempfile.TemporaryDirectory(prefix="i2v-calls-") as folder:
        yield Path(folder) / "aws-calls.jsonl"


@pytest.fixture(scope="package")
def stack(function_log: Path, aws_call_log: Path) -> Iterator[LocalStack]:
    with (
        function_log.open("ab") as log_stream,
        LocalStack(
            function_log=log_stream,
            aws_call_log=aws_call_log,
            environment={
                "SUBMIT_BACKOFF_BASE_SECONDS": "1",
                "RECONCILE_AFTER_SECONDS": str(RECONCILE_AFTER_SECONDS),
            },
            reconcile_interval_seconds=1,
            simulator_options={"render_max_long_side": 320, "progress_delay": 0.1},
        ) as local_stack,
    ):
        yield local_stack


@pytest.fixture
def simulator(stack: LocalStack) -> Iterator[MagnificSimulator]:
    """The stack's provider simulator; faults a test injects end with the test."""
    yield stack.simulator
    stack.simulator.set_faults(**asdict(Faults()))
