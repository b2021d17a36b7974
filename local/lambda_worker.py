"""One Lambda execution environment: a process that loads a handler once and invokes it.

`python -m local.lambda_worker` is started by local/lambda_runtime.py with the
function's environment (its template Environment plus what Lambda's runtime sets:
`_HANDLER`, `LAMBDA_TASK_ROOT`, `AWS_LAMBDA_FUNCTION_*`). It imports the handler from
the task root (the INIT phase), then reads one JSON invocation per line on stdin and
writes one JSON answer per line. Everything the handler prints goes to stderr, so the
answers' channel carries only answers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_epoch_ms: int = field(repr=False)
    identity: None = None
    client_context: None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_epoch_ms - int(time.time() * 1000))


def load_handler(task_root: Path, handler: str) -> Handler:
    """Import `module.function` from the task root, as the Python runtime does."""
    module_name, _, attribute = handler.rpartition(".")
    source = task_root / Path(*module_name.split(".")).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(module_name, source)
    if not module_name or spec is None or spec.loader is None or not source.is_file():
        raise ImportError(f"handler {handler!r}: no module at {source}")
    module = importlib.util.module_from_spec(spec)
    # Registered under its own name, as the runtime's import would: pydantic and
    # dataclasses look a class's module up in sys.modules.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise AttributeError(f"handler {handler!r}: {source} has no callable {attribute!r}")
    return function  # type: ignore[no-any-return]


def error_payload(exc: BaseException) -> dict[str, Any]:
    """An error the way Lambda reports a Python handler's exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_exception(exc),
    }


def _json_default(value: object) -> object:
    # The Python runtime serialises Decimal (boto3's DynamoDB numbers) as numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _answer(channel: IO[str], payload: dict[str, Any]) -> None:
    channel.write(json.dumps(payload, default=_json_default) + "\n")
    channel.flush()


def _invoke(handler: Handler, request: dict[str, Any]) -> dict[str, Any]:
    name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    context = LambdaContext(
        function_name=name,
        function_version=os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        invoked_function_arn=request["invoked_function_arn"],
        memory_limit_in_mb=int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]),
        aws_request_id=request["request_id"],
        log_group_name=os.environ["AWS_LAMBDA_LOG_GROUP_NAME"],
        log_stream_name=os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
        deadline_epoch_ms=request["deadline_ms"],
    )
    os.environ["_X_AMZN_TRACE_ID"] = request["trace_id"]
    try:
        return {"result": handler(request["event"], context)}
    except Exception as exc:
        _log_error(exc)
        return {"error": error_payload(exc)}


def _log_error(exc: BaseException) -> None:
    # What the runtime writes to the function's log when a handler raises.
    print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


AWS_CALL_LOG = "LOCAL_AWS_CALL_LOG"


def record_aws_calls(path: Path) -> None:
    """Append one JSON line per AWS call this process makes to `path` (function,
    service, operation, and the task id a DynamoDB call is about), through botocore's
    event hooks on boto3's default session. Used by the local stack's call counting;
    the functions' code is unchanged."""
    import boto3

    function = os.environ["AWS_LAMBDA_FUNCTION_NAME"]

    def recorded(model: Any, params: dict[str, Any], **_: Any) -> None:
        task_id = None
        if model.service_model.service_name == "dynamodb":  # a JSON body: {"Key": {"task_id": {"S": ...}}}
            body = json.loads(params.get("body") or b"{}")
            key = body.get("Key") or body.get("Item") or {}
            task_id = (key.get("task_id") or {}).get("S")
        line = {
            "function": function,
            "service": model.service_model.service_name,
            "operation": model.name,
            "task_id": task_id,
            "at": time.time(),
        }
        with path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    # Once per API call sent (retries happen below it; presigning a URL sends nothing).
    boto3.DEFAULT_SESSION.events.register("before-call", recorded)


WORKER_HOOKS = "LOCAL_WORKER_HOOKS"


def load_hooks(names: str) -> list[Any]:
    """Import the comma-separated `names` (modules under local/, never the functions' code)
    and call each one's `install()`: how a test wraps a process's AWS clients (botocore
    event hooks) or its handler (a module's optional `wrap_handler(handler)`)."""
    hooks = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        module = importlib.import_module(name)
        module.install()
        hooks.append(module)
    return hooks


def main() -> int:
    # Keep the answers' channel to ourselves; the handler's prints and logs go to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if os.environ.get(AWS_CALL_LOG):
        record_aws_calls(Path(os.environ[AWS_CALL_LOG]))
    try:
        hooks = load_hooks(os.environ.get(WORKER_HOOKS, ""))
        handler = load_handler(Path(os.environ["LAMBDA_TASK_ROOT"]), os.environ["_HANDLER"])
        for hook in hooks:
            wrap = getattr(hook, "wrap_handler", None)
            handler = wrap(handler) if wrap is not None else handler
    except Exception as exc:
        _log_error(exc)
        _answer(answers, {"init_error": error_payload(exc)})
        return 1
    _answer(answers, {"ready": True})
    for line in sys.stdin:
        try:
            answer = _invoke(handler, json.loads(line))
            _answer(answers, answer)
        except TypeError as exc:  # a result that is not JSON: Lambda fails the invocation
            _answer(answers, {"error": error_payload(exc)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
