"""The functions' fault hooks (local/chaos/worker.py) on a real TaskStore against moto's
server over loopback: injected errors leave the table untouched, and each death happens
on its side of the step boundary it names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.tasks.store import TaskStore
from local.chaos import worker
from local.chaos.worker import WorkerFaults
from local.moto_server import MotoServer
from tests.support.aws import create_tasks_table

TOKEN_HASH = "0" * 64


class Died(Exception):
    """What os._exit does in these tests: the step stops where the process would die."""


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


def _session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def _client(session: boto3.session.Session, service: str, url: str) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    return session.client(service, endpoint_url=url, config=config)


@pytest.fixture
def plain(moto_url: str) -> Any:
    """A DynamoDB client without hooks, to see what really was written."""
    return _client(_session(), "dynamodb", moto_url)


@pytest.fixture
def table(plain: Any, request: pytest.FixtureRequest) -> str:
    return create_tasks_table(plain, name=f"tasks-{request.node.name[:40]}")


def _faulty(
    tmp_path: Path, moto_url: str, service: str, monkeypatch: pytest.MonkeyPatch, **rates: float
) -> tuple[Any, WorkerFaults]:
    def died(status: int) -> None:
        raise Died(status)

    monkeypatch.setattr(worker.os, "_exit", died)
    plan = {"seed": 7, "rates": rates, "log": str(tmp_path / "faults.jsonl"), "counter_dir": str(tmp_path)}
    faults = WorkerFaults(plan, "fn")
    session = _session()
    session.events.register("before-call", faults.before_call)
    session.events.register("before-send", faults.before_send)
    session.events.register("after-call", faults.after_call)
    return _client(session, service, moto_url), faults


def _task(task_id: str = "t-1") -> Task:
    return Task(
        task_id=task_id,
        status=TaskStatus.RECEIVED,
        source=SourceObject(bucket="media", key="incoming/cat.png", size=10),
        provider=ProviderRef(name="magnific"),
        token_hash=TOKEN_HASH,
        owner="msg-1",
        received_at=1000.0,
        updated_at=1000.0,
    )


def _status(plain: Any, table: str) -> str | None:
    item = plain.get_item(TableName=table, Key={"task_id": {"S": "t-1"}}).get("Item")
    return None if item is None else str(item["status"]["S"])


def _logged(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]


def test_an_error_on_every_attempt_reaches_the_caller_and_writes_nothing(
    tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every DynamoDB call fails on each attempt
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, dynamodb_error=1.0)

    # When the claim is written / Then the caller sees the error and the table has nothing
    with pytest.raises(ClientError) as raised:
        TaskStore(client, table).create(_task(), lease_until=1100.0)
    assert raised.value.response["Error"]["Code"] == "InternalServerError"
    assert _status(plain, table) is None
    assert [(f["kind"], f["task_id"]) for f in _logged(tmp_path)] == [("dynamodb_error", "t-1")]


def test_a_throttle_is_drawn_per_attempt_so_the_sdk_retries_it(
    tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, dynamodb_throttle=1.0)
    with pytest.raises(ClientError) as raised:
        TaskStore(client, table).create(_task(), lease_until=1100.0)
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    kinds = [f["kind"] for f in _logged(tmp_path)]
    assert len(kinds) > 1 and set(kinds) == {"dynamodb_throttle"}  # the SDK tried again
    assert _status(plain, table) is None


def test_death_after_the_claim_comes_once_the_claim_is_written(
    tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, die_after_claim=1.0)
    with pytest.raises(Died):
        TaskStore(client, table).create(_task(), lease_until=1100.0)
    assert _status(plain, table) == "RECEIVED"
    assert [f["kind"] for f in _logged(tmp_path)] == ["die_after_claim"]


def test_death_before_the_provider_id_comes_before_it_is_written(
    tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    TaskStore(plain, table).create(_task(), lease_until=1100.0)
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, die_before_provider_id=1.0)
    with pytest.raises(Died):
        TaskStore(client, table).mark_submitted("t-1", provider_task_id="p-1", now=1001.0)
    assert _status(plain, table) == "RECEIVED"


def test_death_before_the_notification_comes_after_the_terminal_write_only(
    tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, die_before_notification=1.0)
    store = TaskStore(client, table)
    # Given writes that are not a task's end: no death
    store.create(_task(), lease_until=1100.0)
    store.mark_submitted("t-1", provider_task_id="p-1", now=1001.0)
    store.move("t-1", TaskStatus.FINALIZING, now=1002.0, set_={"owner": "fin-1", "outcome": "SUCCEEDED"})
    # When the owner ends it / Then the write is done, and the process dies right after
    with pytest.raises(Died):
        store.end("t-1", TaskStatus.SUCCEEDED, owner="fin-1", now=1003.0)
    assert _status(plain, table) == "SUCCEEDED"


def test_a_failing_publish_fails_every_attempt(
    tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sns, _ = _faulty(tmp_path, moto_url, "sns", monkeypatch, sns_publish_failure=1.0)
    topic = sns.create_topic(Name="chaos-topic")["TopicArn"]  # not a Publish: untouched
    with pytest.raises(ClientError) as raised:
        sns.publish(TopicArn=topic, Message="{}")
    assert raised.value.response["Error"]["Code"] == "InternalError"


def test_each_process_of_a_function_gets_its_own_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = {
        "seed": 7,
        "rates": {"dynamodb_throttle": 0.5},
        "log": str(tmp_path / "f"),
        "counter_dir": str(tmp_path),
    }
    first, second, again = WorkerFaults(plan, "fn"), WorkerFaults(plan, "fn"), WorkerFaults(plan, "other")
    assert (first.process, second.process, again.process) == (1, 2, 1)
    draws = [[faults.strikes("dynamodb_throttle", None) for _ in range(64)] for faults in (first, second)]
    assert draws[0] != draws[1]
    replay = WorkerFaults({**plan, "counter_dir": str(tmp_path / "replay")}, "fn")
    assert [replay.strikes("dynamodb_throttle", None) for _ in range(64)] == draws[0]


def test_an_unknown_fault_is_refused(tmp_path: Path) -> None:
    plan = {
        "seed": 1,
        "rates": {"dynamo_typo": 0.1},
        "log": str(tmp_path / "f"),
        "counter_dir": str(tmp_path),
    }
    with pytest.raises(ValueError, match="dynamo_typo"):
        WorkerFaults(plan, "fn")


@pytest.mark.parametrize("write", ["mark_submitted", "hold_unconfirmed"])
def test_outcome_write_fails_at_its_step(
    write: str, tmp_path: Path, moto_url: str, plain: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claimed task, and every DynamoDB call failing on each attempt
    TaskStore(plain, table).create(_task(), lease_until=1100.0)
    client, _ = _faulty(tmp_path, moto_url, "dynamodb", monkeypatch, dynamodb_error=1.0)
    store = TaskStore(client, table)

    # When the outcome of the create call is written: its id, or the unanswered call's hold
    with pytest.raises(ClientError):
        if write == "mark_submitted":
            store.mark_submitted("t-1", provider_task_id="p-1", now=1001.0)
        else:
            store.hold_unconfirmed(
                "t-1", error={"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "x"}, now=1001.0
            )

    # Then the fault is logged at the step the chaos report explains second submissions by
    assert [(f["kind"], f["step"]) for f in _logged(tmp_path)] == [("dynamodb_error", "record_provider_id")]
    assert _status(plain, table) == "RECEIVED"
