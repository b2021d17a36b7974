"""The whole deployed topology on one machine, from template.yaml.

moto's server plays AWS (S3 with its real notifications to SQS, SQS, DynamoDB, SNS,
Secrets Manager); the template's buckets, queues, table and topic are created from
their own Properties; each function runs in Lambda-like execution environments with
the Environment the template gives it, plus a few local overrides; an SQS dispatcher,
an HTTP API gateway and a schedule timer invoke them as their template events say;
a simulator plays each configured route's provider. See docs/local-stack.md.

    with LocalStack() as stack:
        stack.upload(Path("cat.png"), "incoming/cat.png", {"prompt": "a cat"})
        notification = stack.wait_for_notification("incoming/cat.png", timeout=60)
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config

from local.dispatcher import SqsDispatcher, SqsEventSource
from local.gateway import INTEGRATION_TIMEOUT_SECONDS, HttpApiGateway
from local.lambda_runtime import FunctionConfig, LocalFunction
from local.lambda_worker import aws_call_log_environment
from local.moto_server import MOTO_ACCOUNT_ID, MotoServer
from local.resources import FunctionSpec, LocalResources
from local.schedule import ScheduleTimer, rate_seconds
from local.service import BackgroundService
from local.simulators import simulator_class
from local.simulators.core import Simulator
from local.template import load_template

log = logging.getLogger(__name__)
T = TypeVar("T")

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPOSITORY_ROOT / "template.yaml"
DEFAULT_STACK_NAME = "i2v-local"
DEFAULT_REGION = "us-east-1"
# moto accepts any credentials; these keep a developer's real ones out of every call.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# HTTP APIs scale out per request; locally a few environments serve the webhooks.
HTTP_API_ENVIRONMENTS = 4
# The task table's attribute and index for "tasks of this upload" (see i2v/tasks/store.py).
SOURCE_URI_ATTRIBUTE = "source_uri"
POLL_SECONDS = 0.2
RECONCILE_FUNCTION = "ReconcileFunction"
# A shortened queue visibility stays this far above its function's timeout.
VISIBILITY_MARGIN_SECONDS = 10


class LocalStackError(RuntimeError):
    """The local stack cannot start as asked, or a wait ran out."""


@dataclass(frozen=True)
class RouteSecrets:
    """What the local stack stored for one route, and hands its simulator."""

    api_key: str
    webhook_secret: str | None = None

    def simulator_kwargs(self) -> dict[str, str]:
        kwargs = {"api_key": self.api_key}
        if self.webhook_secret is not None:
            kwargs["webhook_secret"] = self.webhook_secret
        return kwargs


@dataclass(frozen=True)
class Notification:
    """One SNS message, as the notifications tap queue received its envelope."""

    message_id: str
    subject: str | None
    message: dict[str, Any]
    attributes: dict[str, str]
    timestamp: str
    envelope: dict[str, Any] = field(repr=False)

    @property
    def task_id(self) -> str | None:
        value = self.message.get("task_id")
        return str(value) if value is not None else None

    @property
    def source_key(self) -> str | None:
        source = self.message.get("source") or {}
        value = source.get("key") if isinstance(source, dict) else None
        return str(value) if value is not None else None

    @property
    def published_at(self) -> float:
        """When SNS accepted the message (epoch seconds)."""
        return datetime.fromisoformat(self.timestamp.replace("Z", "+00:00")).timestamp()

    def concerns(self, task_id_or_key: str) -> bool:
        return task_id_or_key in (self.task_id, self.source_key)


def _plain(value: Any) -> Any:
    """A deserialised DynamoDB value with numbers as int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [_plain(item) for item in value]
    return value


class LocalStack(BackgroundService):
    """Start with `start()` or `with`; everything stops on `stop()`, with bounded waits.

    `parameters` override the template's parameter defaults (`routes` is its `Routes`,
    primary first); `environment` adds to (and wins over) every function's environment,
    after the local overrides; a `reconcile_interval_seconds` replaces the reconciler's
    schedule rate (other schedules, the audit's, keep theirs: tests invoke it when they need it);
    `poll_seconds` replaces the polling routes' first-check delay and interval (the
    deployed defaults are minutes and 15 s); `simulator_options` go to every route's
    simulator; the functions' output goes to `function_log` (default: stderr);
    with `aws_call_log`, every AWS call a function makes is appended there as a JSON line
    (`aws_calls()` reads them back). `function_timeout_seconds` replaces functions'
    Timeout and `visibility_timeout_seconds` the visibility timeout of the queues that feed
    them (both by the function's logical id), so that a crashed invocation's messages come
    back in seconds rather than the deployed minutes; a queue's stays above its function's
    timeout, as in the template.
    """

    def __init__(
        self,
        *,
        template_path: Path = DEFAULT_TEMPLATE,
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = DEFAULT_REGION,
        parameters: Mapping[str, str] | None = None,
        routes: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        reconcile_interval_seconds: float | None = None,
        poll_seconds: int | None = 2,
        simulator_options: Mapping[str, Any] | None = None,
        function_log: IO[bytes] | None = None,
        aws_call_log: Path | None = None,
        function_timeout_seconds: Mapping[str, int] | None = None,
        visibility_timeout_seconds: Mapping[str, int] | None = None,
    ) -> None:
        self.template_path = Path(template_path)
        self.stack_name = stack_name
        self.region = region
        self._parameters = dict(parameters or {})
        if routes is not None:
            self._parameters["Routes"] = ",".join(routes)
        self._poll_seconds = poll_seconds
        self._environment = dict(environment or {})
        self._schedule_interval = reconcile_interval_seconds
        self._simulator_options = dict(simulator_options or {})
        self._function_log = function_log
        self.aws_call_log = aws_call_log
        self._timeouts = dict(function_timeout_seconds or {})
        self._visibility = dict(visibility_timeout_seconds or {})
        self._running = contextlib.ExitStack()
        self._notifications: list[Notification] = []
        self._tap_lock = threading.Lock()
        self.functions: dict[str, LocalFunction] = {}
        self.specs: dict[str, FunctionSpec] = {}
        self.dispatchers: list[SqsDispatcher] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        log.info("local stack up in %.1f s", time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Stop everything started, last started first."""
        self._running.close()

    def _start(self) -> None:
        self.functions, self.dispatchers = {}, []
        self.moto = MotoServer()
        self.moto.start()
        self._running.callback(self.moto.stop)
        self._make_clients()

        resources = LocalResources(
            load_template(self.template_path),
            template_dir=self.template_path.parent,
            clients={"s3": self.s3, "sqs": self.sqs, "dynamodb": self.dynamodb, "sns": self.sns},
            stack_name=self.stack_name,
            region=self.region,
            account_id=MOTO_ACCOUNT_ID,
            parameter_overrides=self._parameters,
        )
        resources.create_all()
        specs = resources.function_specs()
        self.specs = {spec.logical_id: spec for spec in specs}
        self._describe_resources(resources, specs)

        self.routes = tuple(_shared_environment(specs).get("ROUTES", "magnific").split(","))
        self.route_secrets = self._store_route_secrets(specs)
        # Registered before the gateway's stop: environments stop once nothing invokes them.
        self._running.callback(self._stop_functions)
        self.gateway = HttpApiGateway(
            api_id=self._api_id(specs),
            account_id=MOTO_ACCOUNT_ID,
            integration_timeout_seconds=self._integration_timeout(specs),
        )
        self._running.callback(self.gateway.stop)
        self.simulators: dict[str, Simulator[Any]] = {}
        for name in self.routes:
            # Each route's simulator takes its own secrets (an API key, a webhook secret).
            make: Any = simulator_class(name)
            simulator: Simulator[Any] = make(
                "127.0.0.1", 0, **self.route_secrets[name].simulator_kwargs(), **self._simulator_options
            )
            simulator.start()
            self._running.callback(simulator.stop)
            self.simulators[name] = simulator

        for spec in specs:
            self.functions[spec.logical_id] = LocalFunction(
                self._function_config(spec),
                max_environments=self._environment_cap(spec),
                log_stream=self._function_log,
            )
        self._subscribe_tap()
        self._warm_up()
        self.gateway.start()
        for spec in specs:
            self._wire_events(spec)

    def _make_clients(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3})

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=self.moto.url, config=config)

        self.s3 = client("s3")
        self.sqs = client("sqs")
        self.dynamodb = client("dynamodb")
        self.sns = client("sns")
        self.secretsmanager = client("secretsmanager")
        self.ssm = client("ssm")

    def _describe_resources(self, resources: LocalResources, specs: list[FunctionSpec]) -> None:
        """Names the functions see (their settings), so helpers agree with the functions."""
        environment = _shared_environment(specs)
        self.bucket = environment["BUCKET_NAME"]
        self.table = environment["TABLE_NAME"]
        self.topic_arn = environment["TOPIC_ARN"]
        self.incoming_prefix = environment.get("INCOMING_PREFIX", "incoming/")
        self.videos_prefix = environment.get("VIDEOS_PREFIX", "videos/")
        self.uploads_queue_url = _function_variable(specs, "UPLOADS_QUEUE_URL")
        self.finalize_queue_url = _function_variable(specs, "FINALIZE_QUEUE_URL")
        self.dead_letter_queue_url = self._dead_letter_queue(self.uploads_queue_url)
        self.finalize_dead_letter_queue_url = self._dead_letter_queue(self.finalize_queue_url)
        self.poll_queue_url = _function_variable(specs, "POLL_QUEUE_URL")
        self.poll_dead_letter_queue_url = self._dead_letter_queue(self.poll_queue_url)
        self._source_index = _index_with_hash_key(resources, self.table, SOURCE_URI_ATTRIBUTE)

    def _dead_letter_queue(self, queue_url: str) -> str | None:
        redrive = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ].get("RedrivePolicy")
        if not redrive:
            return None
        dead_letter_arn = json.loads(redrive)["deadLetterTargetArn"]
        return str(self.sqs.get_queue_url(QueueName=dead_letter_arn.rsplit(":", 1)[1])["QueueUrl"])

    def _store_route_secrets(self, specs: list[FunctionSpec]) -> dict[str, RouteSecrets]:
        """A fresh API key (and webhook secret, for routes signing with one) per configured
        route, where the functions' route settings look for them."""
        from i2v.providers import route_entry

        environment = _shared_environment(specs)
        store = environment.get("SECRET_STORE", "secretsmanager")
        found: dict[str, RouteSecrets] = {}
        for name in self.routes:
            entry = route_entry(name)
            settings = entry.load_settings(environment)
            stored = RouteSecrets(
                api_key=secrets.token_urlsafe(32),
                webhook_secret=(
                    "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
                    if entry.webhook_secret
                    else None
                ),
            )
            for secret_name, value in (
                (settings.api_key_secret_name, stored.api_key),
                (settings.webhook_secret_name, stored.webhook_secret),
            ):
                if not value:
                    continue
                if store == "ssm":
                    self.ssm.put_parameter(Name=secret_name, Value=value, Type="SecureString")
                else:
                    self.secretsmanager.create_secret(Name=secret_name, SecretString=value)
            found[name] = stored
        return found

    def update_environment(self, changes: Mapping[str, str]) -> None:
        """Change every function's environment, as a stack update would (new invocations
        run in new environments): e.g. `{"ROUTES": "dashscope,magnific"}`."""
        for function in self.functions.values():
            function.update_environment(changes)

    @property
    def simulator(self) -> Simulator[Any]:
        """The primary route's simulator."""
        return self.simulators[self.routes[0]]

    @property
    def api_key(self) -> str:
        return self.route_secrets[self.routes[0]].api_key

    @property
    def webhook_secret(self) -> str | None:
        return self.route_secrets[self.routes[0]].webhook_secret

    def _route_overrides(self) -> dict[str, str]:
        """Each configured route pointed at its simulator, with short polls."""
        overrides: dict[str, str] = {}
        for name, simulator in self.simulators.items():
            prefix = name.upper() + "_"
            overrides |= {prefix + key: value for key, value in simulator.pipeline_settings().items()}
            if self._poll_seconds is not None:
                overrides[prefix + "FIRST_POLL_SECONDS"] = str(self._poll_seconds)
                overrides[prefix + "POLL_INTERVAL_SECONDS"] = str(self._poll_seconds)
        return overrides

    def _local_overrides(self) -> dict[str, str]:
        """What differs from the deployed settings, and why: everything is on loopback."""
        return {
            "AWS_ENDPOINT_URL": self.moto.url,
            **FAKE_CREDENTIALS,
            **self._route_overrides(),
            "WEBHOOK_BASE_URL": self.gateway.url,
            # The simulator serves its videos over plain HTTP on 127.0.0.1.
            "VIDEO_ALLOW_HTTP": "true",
            "VIDEO_ALLOW_PRIVATE_NETWORKS": "true",
            "VIDEO_ALLOWED_HOSTS": "127.0.0.1",
            # No X-Ray daemon here.
            "POWERTOOLS_TRACE_DISABLED": "true",
            # The session's call log too, in a test session (tests/conftest.py).
            **aws_call_log_environment(
                self.aws_call_log,
                template_path=self.template_path,
                parameters=self._parameters,
                specs=self.specs,
            ),
        }

    def _function_config(self, spec: FunctionSpec) -> FunctionConfig:
        environment = {**spec.environment, **self._local_overrides(), **self._environment}
        # What Lambda sets from the function's LoggingConfig (advanced logging controls).
        if "LogFormat" in spec.logging_config:
            environment["AWS_LAMBDA_LOG_FORMAT"] = str(spec.logging_config["LogFormat"])
        if "ApplicationLogLevel" in spec.logging_config:
            environment["AWS_LAMBDA_LOG_LEVEL"] = str(spec.logging_config["ApplicationLogLevel"])
        return FunctionConfig(
            logical_id=spec.logical_id,
            function_name=spec.function_name,
            function_arn=spec.function_arn,
            code_dir=spec.code_dir,
            handler=spec.handler,
            timeout_seconds=self._timeouts.get(spec.logical_id, spec.timeout_seconds),
            memory_mb=spec.memory_mb,
            layer_dirs=spec.layer_dirs,
            environment=environment,
            region=self.region,
        )

    @staticmethod
    def _environment_cap(spec: FunctionSpec) -> int:
        cap = 0
        for event in spec.events.values():
            if event.get("Type") == "SQS":
                scaling = event["Properties"].get("ScalingConfig", {})
                cap += int(scaling.get("MaximumConcurrency", 1000))
            elif event.get("Type") == "HttpApi":
                cap += HTTP_API_ENVIRONMENTS
            else:
                cap += 1
        return max(1, cap)

    @staticmethod
    def _api_id(specs: list[FunctionSpec]) -> str:
        api_ids = {
            str(event["Properties"].get("ApiId", "ServerlessHttpApi"))
            for spec in specs
            for event in spec.events.values()
            if event.get("Type") == "HttpApi"
        }
        if len(api_ids) > 1:
            raise LocalStackError(f"the local gateway serves one HTTP API, the template has {api_ids}")
        return api_ids.pop() if api_ids else "none"

    @staticmethod
    def _integration_timeout(specs: list[FunctionSpec]) -> float:
        timeouts = [
            int(event["Properties"]["TimeoutInMillis"]) / 1000
            for spec in specs
            for event in spec.events.values()
            if event.get("Type") == "HttpApi" and "TimeoutInMillis" in event["Properties"]
        ]
        return min(timeouts, default=INTEGRATION_TIMEOUT_SECONDS)

    def _warm_up(self) -> None:
        """One environment per function, started side by side (each is a process)."""
        failures: list[BaseException] = []

        def warm(function: LocalFunction) -> None:
            try:
                function.warm_up()
            except BaseException as error:
                failures.append(error)

        threads = [
            threading.Thread(target=warm, args=(function,), name=f"warm-{function.name}")
            for function in self.functions.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def _wire_events(self, spec: FunctionSpec) -> None:
        function = self.functions[spec.logical_id]
        for name, event in spec.events.items():
            properties = event.get("Properties", {})
            if str(properties.get("Enabled", True)).lower() == "false":
                continue
            kind = event.get("Type")
            if kind == "SQS":
                self._start_dispatcher(function, properties)
            elif kind == "HttpApi":
                if str(properties.get("PayloadFormatVersion", "2.0")) != "2.0":
                    raise LocalStackError(f"{spec.logical_id}.{name}: only payload format 2.0 runs locally")
                self.gateway.add_route(str(properties["Method"]), str(properties["Path"]), function)
            elif kind == "Schedule":
                self._start_timer(function, spec, name, properties)
            else:
                raise LocalStackError(f"{spec.logical_id}.{name}: event type {kind} does not run locally")

    def _start_dispatcher(self, function: LocalFunction, properties: Mapping[str, Any]) -> None:
        queue_arn = str(properties["Queue"])
        queue_url = self.sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[1])["QueueUrl"]
        if function.config.logical_id in self._visibility:
            visibility = max(
                self._visibility[function.config.logical_id],
                function.config.timeout_seconds + VISIBILITY_MARGIN_SECONDS,
            )
            self.sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(visibility)}
            )
        scaling = properties.get("ScalingConfig", {})
        source = SqsEventSource(
            queue_url=queue_url,
            queue_arn=queue_arn,
            region=self.region,
            # Lambda's defaults for an SQS event source.
            batch_size=int(properties.get("BatchSize", 10)),
            batching_window_seconds=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
            maximum_concurrency=int(scaling.get("MaximumConcurrency", 1000)),
            report_batch_item_failures="ReportBatchItemFailures"
            in properties.get("FunctionResponseTypes", []),
        )
        dispatcher = SqsDispatcher(self.sqs, source, function)
        dispatcher.start()
        self._running.callback(dispatcher.stop)
        self.dispatchers.append(dispatcher)

    def _start_timer(
        self,
        function: LocalFunction,
        spec: FunctionSpec,
        event_name: str,
        properties: Mapping[str, Any],
    ) -> None:
        override = self._schedule_interval if spec.logical_id == RECONCILE_FUNCTION else None
        interval = override or rate_seconds(str(properties["Schedule"]))
        # SAM names the rule after the function and the event.
        rule_name = f"{self.stack_name}-{spec.logical_id}{event_name}-LOCAL"
        timer = ScheduleTimer(
            function,
            interval_seconds=interval,
            rule_arn=f"arn:aws:events:{self.region}:{MOTO_ACCOUNT_ID}:rule/{rule_name}",
            region=self.region,
            account_id=MOTO_ACCOUNT_ID,
        )
        timer.start()
        self._running.callback(timer.stop)

    def _stop_functions(self) -> None:
        for function in self.functions.values():
            function.stop()

    def _subscribe_tap(self) -> None:
        """An SQS queue on the topic (envelopes, not raw), where notifications can be read."""
        self.tap_queue_url = self.sqs.create_queue(QueueName=f"{self.stack_name}-notifications-tap")[
            "QueueUrl"
        ]
        tap_arn = self.sqs.get_queue_attributes(QueueUrl=self.tap_queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=tap_arn,
            Attributes={"RawMessageDelivery": "false"},
        )

    # -- using the stack ------------------------------------------------------------------

    def outputs(self) -> dict[str, str]:
        """The template's Outputs as this stack's resources give them (what `i2v` reads)."""
        found = {
            "BucketName": self.bucket,
            "TableName": self.table,
            "TopicArn": self.topic_arn,
            "WebhookBaseUrl": self.gateway.url,
            "UploadsQueueUrl": self.uploads_queue_url,
            "DeadLetterQueueUrl": self.dead_letter_queue_url,
            "FinalizeQueueUrl": self.finalize_queue_url,
            "FinalizeDeadLetterQueueUrl": self.finalize_dead_letter_queue_url,
            "PollQueueUrl": self.poll_queue_url,
            "PollDeadLetterQueueUrl": self.poll_dead_letter_queue_url,
        }
        return {name: value for name, value in found.items() if value is not None}

    def upload(
        self,
        source: Path | bytes,
        key: str,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """PUT an object, as a user would; S3 metadata must be ASCII (percent-encode the rest)."""
        body = source.read_bytes() if isinstance(source, Path) else source
        extra = {"ContentType": content_type} if content_type else {}
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=dict(metadata or {}), **extra)

    def notifications(self, task_id_or_key: str | None = None) -> list[Notification]:
        """The notifications received so far (about one task or upload key, if given)."""
        self._drain_tap(wait_seconds=0)
        with self._tap_lock:
            received = list(self._notifications)
        if task_id_or_key is None:
            return received
        return [n for n in received if n.concerns(task_id_or_key)]

    def wait_for_notification(self, task_id_or_key: str, timeout: float = 60.0) -> Notification:
        """The first notification about a task id or an upload's key."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.notifications(task_id_or_key)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise LocalStackError(f"no notification about {task_id_or_key!r} in {timeout} s")
            self._drain_tap(wait_seconds=1)

    def _drain_tap(self, wait_seconds: int) -> None:
        with self._tap_lock:
            while True:
                messages = self.sqs.receive_message(
                    QueueUrl=self.tap_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
                ).get("Messages", [])
                if not messages:
                    return
                for message in messages:
                    self._notifications.append(_notification(json.loads(message["Body"])))
                self.sqs.delete_message_batch(
                    QueueUrl=self.tap_queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )
                wait_seconds = 0

    def task(self, task_id: str) -> dict[str, Any] | None:
        """A task's item, as plain data (numbers as int or float)."""
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"task_id": {"S": task_id}}, ConsistentRead=True
        ).get("Item")
        return _plain_item(item) if item else None

    def tasks_for(self, key: str) -> list[dict[str, Any]]:
        """The tasks of an upload key, oldest first (the template's by-source index)."""
        items = self.dynamodb.query(
            TableName=self.table,
            IndexName=self._source_index,
            KeyConditionExpression=f"{SOURCE_URI_ATTRIBUTE} = :uri",
            ExpressionAttributeValues={":uri": {"S": f"s3://{self.bucket}/{key}"}},
        ).get("Items", [])
        return [_plain_item(item) for item in items]

    def wait_for_task(
        self,
        key: str,
        statuses: tuple[str, ...] = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT"),
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """The upload's task once it is in one of `statuses` (by default, finished)."""
        return _wait_until(
            lambda: next((t for t in self.tasks_for(key) if t["status"] in statuses), None),
            timeout,
            f"no task of {key!r} reached {statuses} in {timeout} s",
        )

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Until the uploads and finalize queues are empty (nothing waiting, delayed or in flight)."""

        def idle() -> bool | None:
            for queue_url in (self.uploads_queue_url, self.finalize_queue_url):
                counts = self.sqs.get_queue_attributes(
                    QueueUrl=queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                )["Attributes"]
                if any(v != "0" for v in counts.values()):
                    return None
            return (not any(dispatcher.busy for dispatcher in self.dispatchers)) or None

        _wait_until(idle, timeout, f"the queues were still busy after {timeout} s")

    def aws_calls(self) -> list[dict[str, Any]]:
        """The AWS calls the functions made so far (needs `aws_call_log`)."""
        if self.aws_call_log is None:
            raise LocalStackError("start the stack with aws_call_log to record the functions' AWS calls")
        if not self.aws_call_log.exists():
            return []
        lines = self.aws_call_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def video_objects(self) -> Iterator[dict[str, Any]]:
        """Every stored version of every object under the videos prefix."""
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.videos_prefix):
            yield from page.get("Versions", [])


def _wait_until(check: Callable[[], T | None], timeout: float, message: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise LocalStackError(message)
        time.sleep(POLL_SECONDS)


def _shared_environment(specs: list[FunctionSpec]) -> dict[str, str]:
    """The variables every function has, with the same value (the template's Globals)."""
    if not specs:
        raise LocalStackError("the template has no functions")
    shared = dict(specs[0].environment)
    for spec in specs[1:]:
        shared = {k: v for k, v in shared.items() if spec.environment.get(k) == v}
    return shared


def _function_variable(specs: list[FunctionSpec], name: str) -> str:
    """The one value the functions that have variable `name` give it."""
    values = {spec.environment[name] for spec in specs if name in spec.environment}
    if len(values) != 1:
        raise LocalStackError(f"expected one value of {name} in the functions' environment, found {values}")
    return values.pop()


def _index_with_hash_key(resources: LocalResources, table: str, attribute: str) -> str:
    for logical_id in resources.evaluator.logical_ids_of_type("AWS::DynamoDB::Table"):
        if resources.physical(logical_id).ref != table:
            continue
        for index in resources.evaluator.properties(logical_id).get("GlobalSecondaryIndexes", []):
            if any(
                key["AttributeName"] == attribute and key["KeyType"] == "HASH" for key in index["KeySchema"]
            ):
                return str(index["IndexName"])
    raise LocalStackError(f"the task table has no index on {attribute}")


_DESERIALIZER = TypeDeserializer()


def _plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


def _notification(envelope: dict[str, Any]) -> Notification:
    return Notification(
        message_id=str(envelope["MessageId"]),
        subject=envelope.get("Subject"),
        message=json.loads(envelope["Message"]),
        attributes={
            name: str(value.get("Value")) for name, value in envelope.get("MessageAttributes", {}).items()
        },
        timestamp=str(envelope.get("Timestamp")),
        envelope=envelope,
    )
