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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.resources import FunctionSpec

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
SESSION_AWS_CALL_LOG = "LOCAL_SESSION_AWS_CALL_LOG"
"""A log that every local stack of a test session also writes to (tests/conftest.py sets
it), with a description of each stack: the least-privilege test reads the session from it."""

# Where the API parameters of a call wait, in botocore's request context, for the answer.
_CALL = "local_aws_call"
_described_stacks: set[tuple[str, ...]] = set()


def aws_call_log_environment(
    stack_log: Path | None,
    *,
    template_path: Path,
    parameters: Mapping[str, str],
    specs: Mapping[str, FunctionSpec],
) -> dict[str, str]:
    """What a local stack adds to its functions' environment to record their AWS calls: its
    own log, and the session's when this process has one. The session's log also gets the
    stack's description (template, parameter overrides, each function's name, ARN and
    template settings), so that its calls can be read against the template's policies."""
    session = os.environ.get(SESSION_AWS_CALL_LOG)
    if not session:
        return {AWS_CALL_LOG: str(stack_log)} if stack_log else {}
    _describe_stack(Path(session), template_path, parameters, specs)
    if not stack_log:
        return {AWS_CALL_LOG: session}
    return {AWS_CALL_LOG: str(stack_log), SESSION_AWS_CALL_LOG: session}


def _describe_stack(
    log: Path, template_path: Path, parameters: Mapping[str, str], specs: Mapping[str, FunctionSpec]
) -> None:
    # Called once per function of a stack; the function names (random suffixes) say which stack.
    names = tuple(sorted(spec.function_name for spec in specs.values()))
    if names in _described_stacks:
        return
    _described_stacks.add(names)
    line = {
        "kind": "stack",
        "template": str(template_path),
        "parameters": dict(parameters),
        "functions": {
            logical_id: {
                "name": spec.function_name,
                "arn": spec.function_arn,
                "environment": dict(spec.environment),
            }
            for logical_id, spec in specs.items()
        },
    }
    append_lines([log], line)


def append_lines(logs: list[Path], line: Mapping[str, Any]) -> None:
    text = json.dumps(line) + "\n"
    for log in logs:
        with log.open("a", encoding="utf-8") as stream:
            stream.write(text)


def call_line(
    function: str,
    service: str,
    operation: str,
    params: Mapping[str, Any],
    *,
    status: int | None,
    response: Mapping[str, Any] | None = None,
    region: str,
    account: str,
) -> dict[str, Any]:
    """One recorded call: who made it, what it was, how it ended (HTTP status, None when no
    answer came), the task id a DynamoDB call is about, and what IAM must allow for it."""
    key = (params.get("Key") or params.get("Item") or {}) if service == "dynamodb" else {}
    task_id = key.get("task_id", {}).get("S") if isinstance(key, dict) else None
    return {
        "function": function,
        "service": service,
        "operation": operation,
        "task_id": task_id,
        "status": status,
        "iam": [
            {"action": action, "resource": resource}
            for action, resource in iam_requests(
                service, operation, params, response or {}, status=status, region=region, account=account
            )
        ],
        "at": time.time(),
    }


def record_aws_calls(path: Path) -> None:
    """Append one JSON line per AWS call this process makes to `path`, and to the session's
    log when the stack gave one (`call_line`). A presigned URL is recorded too (`presigned`):
    whoever fetches it acts with this function's permissions. Through botocore's event hooks
    on boto3's default session; the functions' code is unchanged."""
    import boto3

    from local.moto_server import MOTO_ACCOUNT_ID

    function = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    session_log = os.environ.get(SESSION_AWS_CALL_LOG)
    logs = [path, *([Path(session_log)] if session_log and Path(session_log) != path else [])]

    def record(model: Any, params: Mapping[str, Any], context: Mapping[str, Any], **line: Any) -> None:
        region = context.get("client_region") or os.environ.get("AWS_REGION", "")
        status = line.pop("status", None)
        recorded = call_line(
            function,
            model.service_model.service_name,
            model.name,
            params,
            status=status,
            response=line.pop("response", None),
            region=region,
            account=MOTO_ACCOUNT_ID,
        )
        append_lines(logs, recorded | line)

    def parameters_built(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context[_CALL] = (model, dict(params))
        if context.get("is_presign_request"):
            record(model, params, context, presigned=True)

    def answered(http_response: Any, parsed: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        if _CALL in context:
            model, params = context[_CALL]
            status = getattr(http_response, "status_code", None)
            record(model, params, context, status=status, response=parsed)

    def unanswered(context: dict[str, Any], **_: Any) -> None:
        if _CALL in context:
            model, params = context[_CALL]
            record(model, params, context)

    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    events = boto3.DEFAULT_SESSION.events
    events.register("before-parameter-build", parameters_built)
    # Once per API call sent (retries happen below these), answered or not.
    events.register("after-call", answered)
    events.register("after-call-error", unanswered)


def _s3_arn(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


# S3 operations whose IAM action is not "s3:<operation>", on the object (True) or the bucket.
_S3_ACTIONS: dict[str, tuple[str, bool]] = {
    "HeadObject": ("s3:GetObject", True),
    "CreateMultipartUpload": ("s3:PutObject", True),
    "UploadPart": ("s3:PutObject", True),
    "CompleteMultipartUpload": ("s3:PutObject", True),
    "ListParts": ("s3:ListMultipartUploadParts", True),
    "ListObjects": ("s3:ListBucket", False),
    "ListObjectsV2": ("s3:ListBucket", False),
    "ListObjectVersions": ("s3:ListBucketVersions", False),
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads", False),
}
_S3_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}
_SQS_BATCHES = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_DYNAMODB_TRANSACT = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def iam_requests(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    response: Mapping[str, Any],
    *,
    status: int | None,
    region: str,
    account: str,
) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs one API call must be allowed, as AWS authorizes
    it: e.g. HeadObject needs s3:GetObject (s3:GetObjectVersion with a VersionId), each
    multipart step s3:PutObject, a Query on an index the index's ARN, a batch or transaction
    each of its items' actions, and a GetSecretValue the secret's full ARN (from the answer).
    S3 answers a missing key with 404 only to a caller allowed s3:ListBucket (403 otherwise),
    so a 404 from GetObject or HeadObject also counts as s3:ListBucket on the bucket."""
    if service == "s3":
        return _s3_requests(operation, params, status)
    if service == "dynamodb":
        return _dynamodb_requests(operation, params, region, account)
    if service in {"sqs", "sns"}:
        return _messaging_requests(service, operation, params, region, account)
    if service in {"secretsmanager", "ssm"}:
        return _secret_requests(service, operation, params, response, region, account)
    # cloudwatch:PutMetricData, kms:Decrypt ...: the boto3 service name is the IAM prefix.
    return [(f"{service}:{operation}", "*")]


def _messaging_requests(
    service: str, operation: str, params: Mapping[str, Any], region: str, account: str
) -> list[tuple[str, str]]:
    if service == "sqs":
        return [(f"sqs:{_SQS_BATCHES.get(operation, operation)}", _queue_arn(params, region, account))]
    topic = str(params.get("TopicArn") or params.get("TargetArn") or "*")
    return [(f"sns:{operation.removesuffix('Batch')}", topic)]  # PublishBatch needs sns:Publish


def _secret_requests(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    response: Mapping[str, Any],
    region: str,
    account: str,
) -> list[tuple[str, str]]:
    if service == "secretsmanager":
        # A name's grant is on the full ARN, which ends in a random suffix: the answer has it.
        secret = str(response.get("ARN") or params.get("SecretId", "*"))
        if not secret.startswith("arn:"):
            secret = f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}"
        return [(f"secretsmanager:{operation}", secret)]
    names = params.get("Names") or [params.get("Name") or params.get("Path", "")]
    head = f"arn:aws:ssm:{region}:{account}:parameter"
    return [(f"ssm:{operation}", head + (name if name.startswith("/") else f"/{name}")) for name in names]


def _s3_requests(operation: str, params: Mapping[str, Any], status: int | None) -> list[tuple[str, str]]:
    bucket = str(params.get("Bucket", ""))
    if operation == "DeleteObjects":
        objects = params.get("Delete", {}).get("Objects", [])
        return [
            (
                "s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject",
                _s3_arn(bucket, item["Key"]),
            )
            for item in objects
        ]
    if operation in {"CopyObject", "UploadPartCopy"}:
        source = params.get("CopySource")
        source_arn = (
            _s3_arn(source["Bucket"], source["Key"])
            if isinstance(source, Mapping)
            else "arn:aws:s3:::" + str(source).split("?", 1)[0].lstrip("/")
        )
        return [("s3:PutObject", _s3_arn(bucket, params["Key"])), ("s3:GetObject", source_arn)]
    action, on_object = _S3_ACTIONS.get(operation, (f"s3:{operation}", "Key" in params))
    if params.get("VersionId"):
        action = _S3_VERSIONED.get(action, action)
    requests = [(action, _s3_arn(bucket, params["Key"]) if on_object else _s3_arn(bucket))]
    if status == 404 and operation in {"GetObject", "HeadObject"}:
        requests.append(("s3:ListBucket", _s3_arn(bucket)))
    return requests


def _dynamodb_requests(
    operation: str, params: Mapping[str, Any], region: str, account: str
) -> list[tuple[str, str]]:
    def table(name: str, index: str | None = None) -> str:
        arn = name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"
        return arn + (f"/index/{index}" if index else "")

    if operation in {"BatchGetItem", "BatchWriteItem"}:
        return [(f"dynamodb:{operation}", table(name)) for name in params.get("RequestItems", {})]
    if operation == "TransactWriteItems":
        return [
            (f"dynamodb:{_DYNAMODB_TRANSACT[kind]}", table(body["TableName"]))
            for item in params.get("TransactItems", [])
            for kind, body in item.items()
        ]
    if operation == "TransactGetItems":
        return [
            ("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in params.get("TransactItems", [])
        ]
    return [(f"dynamodb:{operation}", table(str(params.get("TableName", "*")), params.get("IndexName")))]


def _queue_arn(params: Mapping[str, Any], region: str, account: str) -> str:
    url = params.get("QueueUrl")
    if not url:  # GetQueueUrl, CreateQueue name their queue
        owner = params.get("QueueOwnerAWSAccountId", account)
        return f"arn:aws:sqs:{region}:{owner}:{params.get('QueueName', '*')}"
    # https://sqs.<region>.amazonaws.com/<account>/<name>, or the emulator's http://host:port/<account>/<name>
    owner, name = str(url).rstrip("/").split("/")[-2:]
    return f"arn:aws:sqs:{region}:{owner}:{name}"


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
