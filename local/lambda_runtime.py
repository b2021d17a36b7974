"""Lambda functions on this machine: each execution environment is its own process.

As on Lambda, an environment runs one invocation at a time, keeps its module state
(settings, clients, caches) between invocations, and sees only its function's
environment variables; concurrent invocations get more environments, up to a cap.
That isolation matters: handlers keep per-invocation state in module globals (a batch
processor, an event resolver), which threads sharing one module would trample.

Events and results cross a pipe as JSON, as they cross Lambda's runtime API. A handler
that runs past its Timeout is stopped and reported the way Lambda reports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# What a Lambda Python runtime's environment holds besides the function's own variables.
_INHERITED = ("PATH", "SYSTEMROOT", "TMPDIR")
INIT_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0


class FunctionError(RuntimeError):
    """The invocation failed: the handler raised, timed out, or its runtime died."""

    def __init__(self, function_name: str, payload: Mapping[str, Any]) -> None:
        self.error_type = str(payload.get("errorType", "Runtime.Unknown"))
        self.error_message = str(payload.get("errorMessage", ""))
        self.stack_trace = [str(line) for line in payload.get("stackTrace", [])]
        super().__init__(f"{function_name}: {self.error_type}: {self.error_message}")


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    function_name: str
    function_arn: str
    code_dir: Path
    handler: str
    timeout_seconds: int
    memory_mb: int
    layer_dirs: tuple[Path, ...]
    environment: Mapping[str, str]
    region: str


def lambda_environment(
    config: FunctionConfig, log_stream_name: str, *, extra_path: tuple[Path, ...] = ()
) -> dict[str, str]:
    """What a Lambda Python runtime's process of this function sees: the function's own
    variables and what the runtime sets, with the task root and the layers first on the
    path, as /var/task and /opt/python are on Lambda."""
    python_path = [str(config.code_dir), *map(str, config.layer_dirs), *map(str, extra_path)]
    inherited = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    return {
        **inherited,
        **config.environment,
        "PYTHONPATH": os.pathsep.join(python_path),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "_HANDLER": config.handler,
        "LAMBDA_TASK_ROOT": str(config.code_dir),
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name,
    }


class ExecutionEnvironment:
    """One worker process (local/lambda_worker.py) with the function loaded."""

    def __init__(self, config: FunctionConfig, log_stream: IO[bytes] | None) -> None:
        self._config = config
        self.config = config
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        # Set when the process's output ends: it exited (its pipe closes a moment before
        # the process can be reaped, so `alive` may still say True then).
        self._output_ended = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.lambda_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_stream,
            env=self._environ(),
            cwd=config.code_dir,
        )
        self._reader = threading.Thread(
            target=self._read_answers, name=f"{config.logical_id}-answers", daemon=True
        )
        self._reader.start()

    def _environ(self) -> dict[str, str]:
        # The repository root last on the path, for `local.lambda_worker` itself.
        repository_root = Path(__file__).resolve().parent.parent
        return lambda_environment(self._config, self.log_stream_name, extra_path=(repository_root,))

    def _read_answers(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            self._answers.put(json.loads(line))
        self._output_ended.set()
        self._answers.put(None)  # the process ended

    def wait_ready(self) -> None:
        """The INIT phase: the handler module imported, or FunctionError."""
        answer = self._next_answer(INIT_TIMEOUT_SECONDS)
        if answer is None or "ready" not in answer:
            self.stop()
            init_error = (answer or {}).get("init_error") or {
                "errorType": "Runtime.ExitError",
                "errorMessage": "the runtime exited during init",
            }
            raise FunctionError(self._config.function_name, init_error)

    def _next_answer(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def invoke(self, event: Any) -> Any:
        config = self._config
        started = time.time()
        request = {
            "event": event,
            "request_id": str(uuid.uuid4()),
            "invoked_function_arn": config.function_arn,
            "deadline_ms": int((started + config.timeout_seconds) * 1000),
            "trace_id": f"Root=1-{int(started):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        }
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError):  # a closed pipe, or a closed file object
            raise FunctionError(
                config.function_name,
                {"errorType": "Runtime.ExitError", "errorMessage": "the runtime is not running"},
            ) from None
        # A little grace over the Timeout for the pipe and the process switch.
        answer = self._next_answer(config.timeout_seconds + 1.0)
        if answer is None:
            timed_out = not self._output_ended.is_set()
            self._process.kill()  # as Lambda ends a timed-out environment: no grace
            self.stop()
            message = (
                f"Task timed out after {config.timeout_seconds:.2f} seconds"
                if timed_out
                else "the runtime exited during the invocation"
            )
            error_type = "Sandbox.Timedout" if timed_out else "Runtime.ExitError"
            raise FunctionError(config.function_name, {"errorType": error_type, "errorMessage": message})
        if "error" in answer:
            raise FunctionError(config.function_name, answer["error"])
        return answer["result"]

    def stop(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # the worker's loop ends at end of input
        try:
            self._process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT_SECONDS)
        self._reader.join(STOP_TIMEOUT_SECONDS)
        if self._process.stdout is not None:
            self._process.stdout.close()


class LocalFunction:
    """A function's pool of execution environments; `invoke` is synchronous."""

    def __init__(
        self, config: FunctionConfig, *, max_environments: int, log_stream: IO[bytes] | None
    ) -> None:
        self.config = config
        self._max_environments = max_environments
        self._log_stream = log_stream
        self._environments: set[ExecutionEnvironment] = set()
        self._idle: list[ExecutionEnvironment] = []
        self._starting = 0
        self._available = threading.Condition()
        self._stopped = False

    @property
    def name(self) -> str:
        return self.config.function_name

    def warm_up(self) -> None:
        """Start one environment now, so the first event does not pay the cold start."""
        self._release(self._acquire())

    def invoke(self, event: Any) -> Any:
        """The handler's result for `event`, or FunctionError."""
        environment = self._acquire()
        try:
            return environment.invoke(event)
        finally:
            self._release(environment)

    def _acquire(self) -> ExecutionEnvironment:
        # Waiting for a busy environment is bounded like an invocation is.
        deadline = time.monotonic() + self.config.timeout_seconds + INIT_TIMEOUT_SECONDS
        with self._available:
            while True:
                if self._stopped:
                    raise FunctionError(
                        self.name, {"errorType": "Runtime.Stopped", "errorMessage": "stopped"}
                    )
                if self._idle:
                    return self._idle.pop()
                if len(self._environments) + self._starting < self._max_environments:
                    self._starting += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FunctionError(
                        self.name,
                        {
                            "errorType": "TooManyRequestsException",
                            "errorMessage": "every execution environment stayed busy",
                        },
                    )
                self._available.wait(remaining)
        try:
            environment = ExecutionEnvironment(self.config, self._log_stream)
        except BaseException:
            with self._available:
                self._starting -= 1
                self._available.notify()
            raise
        try:
            environment.wait_ready()
        finally:
            with self._available:
                self._starting -= 1
                admitted = environment.alive and not self._stopped
                if admitted:
                    self._environments.add(environment)
                self._available.notify()
        if not admitted:  # the function was stopped while this environment started
            environment.stop()
            raise FunctionError(self.name, {"errorType": "Runtime.Stopped", "errorMessage": "stopped"})
        return environment

    def update_environment(self, changes: Mapping[str, str]) -> None:
        """Like Lambda's UpdateFunctionConfiguration: later invocations run in new
        environments with `changes` applied; one running now finishes in its old one."""
        with self._available:
            self.config = dataclasses.replace(self.config, environment={**self.config.environment, **changes})
            stale, self._idle = self._idle, []
            for environment in stale:
                self._environments.discard(environment)
        for environment in stale:
            environment.stop()

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._available:
            keep = environment.alive and not self._stopped and environment.config is self.config
            if keep:
                self._idle.append(environment)
            else:
                self._environments.discard(environment)
            self._available.notify()
        if not keep:
            environment.stop()

    def stop(self) -> None:
        """Stop every environment; an invocation still running fails (as on a deletion)."""
        with self._available:
            self._stopped = True
            environments = list(self._environments)
            self._environments.clear()
            self._idle.clear()
            self._available.notify_all()
        for environment in environments:
            environment.stop()
