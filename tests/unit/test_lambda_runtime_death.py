"""A function's process that dies mid-invocation (the chaos run's deaths): reported as
Lambda reports it, and the next invocation gets a fresh environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.lambda_runtime import FunctionConfig, FunctionError, LocalFunction

HANDLER = """
import os
import time

def handler(event, context):
    if event.get("die"):
        os._exit(137)
    time.sleep(event.get("sleep", 0))
    return os.getpid()
"""


@pytest.fixture
def function(tmp_path: Path) -> LocalFunction:
    (tmp_path / "app.py").write_text(HANDLER)
    config = FunctionConfig(
        logical_id="Dying",
        function_name="dying",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:dying",
        code_dir=tmp_path,
        handler="app.handler",
        timeout_seconds=1,
        memory_mb=128,
        layer_dirs=(),
        environment={},
        region="us-east-1",
    )
    return LocalFunction(config, max_environments=1, log_stream=None)


def test_a_dying_process_is_an_exit_error_and_the_next_invocation_starts_afresh(
    function: LocalFunction,
) -> None:
    try:
        pids = {function.invoke({})}
        for _ in range(5):
            # When the handler's process dies / Then Runtime.ExitError, never a timeout
            with pytest.raises(FunctionError) as died:
                function.invoke({"die": True})
            assert died.value.error_type == "Runtime.ExitError"
            # ... and the next invocation runs in a new process
            pids.add(function.invoke({}))
        assert len(pids) == 6
    finally:
        function.stop()


def test_a_handler_past_its_timeout_is_a_timeout(function: LocalFunction) -> None:
    try:
        with pytest.raises(FunctionError) as stopped:
            function.invoke({"sleep": 5})
        assert stopped.value.error_type == "Sandbox.Timedout"
        assert isinstance(function.invoke({}), int)
    finally:
        function.stop()
