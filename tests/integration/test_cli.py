"""Every `i2v` command against the local stack, as an operator runs them: the real CLI
(typer's runner in-process, and the installed `i2v` script in a subprocess for tail),
finding the stack through the file `make stack` writes (local/stack_main.py)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from i2v.domain import derive_task_id
from i2v_cli.errors import Exit
from i2v_cli.main import app
from local.stack import LocalStack
from local.stack_main import write_stack_file
from tests.integration.helpers import png, unique_key, upload_without_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Cli = Callable[..., Any]
I2V_SCRIPT = Path(sys.executable).parent / "i2v"
# Uploads older than this count as lost (the deployed default is an hour).
AUDIT_GRACE_SECONDS = 1


@pytest.fixture(scope="module")
def stack_file(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "local-stack.json"
    write_stack_file(stack, path)
    return path


@pytest.fixture
def cli(stack_file: Path) -> Cli:
    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["--stack-file", str(stack_file), *args])

    return run


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_submit_waits_for_each_task_then_status_list_and_cost_find_them(cli: Cli, tmp_path: Path) -> None:
    # Given a folder with one good image and one that is not an image at all
    folder = tmp_path / "shoot"
    folder.mkdir()
    (folder / "good.png").write_bytes(png())
    (folder / "broken.png").write_bytes(b"not an image")
    prefix = f"cli {uuid.uuid4().hex[:8]}/"

    # When both are submitted and followed to their end
    submitted = cli(
        "submit", str(folder), "--key-prefix", prefix, "--prompt", "Été: the horse gallops", "--duration", "3",
        "--wait", "--timeout", "60", "--json",
    )  # fmt: skip

    # Then the command fails, since one did not succeed, and says how each ended
    assert submitted.exit_code == Exit.FAILED, submitted.output
    uploads = {Path(u["key"]).name: u for u in json.loads(submitted.stdout)["uploads"]}
    assert (uploads["good.png"]["status"], uploads["broken.png"]["status"]) == ("SUCCEEDED", "REJECTED")
    good = uploads["good.png"]
    assert good["key"] == f"incoming/{prefix}good.png" and good["video_key"].endswith(
        f"{good['task_id']}.mp4"
    )
    assert uploads["broken.png"]["error"]["code"] == "UNSUPPORTED_FORMAT"

    # And status finds the task by its id and by its key, with the options it was given
    by_id = as_json(cli("status", good["task_id"], "--json"))["tasks"]
    by_key = as_json(cli("status", f"s3://{good['bucket']}/{good['key']}", "--json"))["tasks"]
    assert by_id == by_key and len(by_id) == 1
    assert by_id[0]["options"]["prompt"] == "Été: the horse gallops" and by_id[0]["options"]["duration"] == 3
    human = cli("status", good["task_id"])
    assert human.exit_code == 0 and "SUCCEEDED" in human.stdout and f"{good['task_id']}.mp4" in human.stdout
    # (its provider attempt shown as the task ended it)
    assert "magnific succeeded" in human.stdout

    # And list and cost count it
    listed = as_json(cli("list", "--status", "SUCCEEDED", "--status", "REJECTED", "--since", "5m", "--json"))
    listed_ids = [t["task_id"] for t in listed["tasks"]]
    assert {good["task_id"], uploads["broken.png"]["task_id"]} <= set(listed_ids)
    assert all(t["status"] in ("SUCCEEDED", "REJECTED") for t in listed["tasks"])
    spent = as_json(cli("cost", "--since", "5m", "--json"))
    magnific = next(
        row for row in spent["rows"] if row["route"] == "magnific" and row["resolution"] == "1080P"
    )
    assert magnific["submitted"] >= 1 and magnific["succeeded"] >= 1 and magnific["tasks"] >= 2


def test_tail_follows_notifications_and_removes_its_queue_on_ctrl_c(
    stack: LocalStack, stack_file: Path
) -> None:
    # Given the installed script tailing the topic
    tail = subprocess.Popen(
        [str(I2V_SCRIPT), "--stack-file", str(stack_file), "tail", "--json", "--event", "video.rejected"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None and tail.stdout is not None
        assert "following" in tail.stderr.readline()
        queues = stack.sqs.list_queues(QueueNamePrefix="i2v-tail-").get("QueueUrls", [])
        assert len(queues) == 1

        # When an upload is rejected
        key = unique_key(stack, "tail")
        stack.upload(b"not an image", key)
        task = stack.wait_for_task(key, timeout=30)

        # Then its notification is printed as it arrives
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not any(n["message"]["task_id"] == task["task_id"] for n in seen):
            assert time.monotonic() < deadline, seen
            seen.append(json.loads(tail.stdout.readline()))
        note = next(n for n in seen if n["message"]["task_id"] == task["task_id"])
        assert note["attributes"]["event_type"] == "video.rejected"
        assert note["message"]["source"]["key"] == key
    finally:
        # And Ctrl-C ends it cleanly, its queue and subscription deleted
        tail.send_signal(signal.SIGINT)
        code = tail.wait(timeout=20)
    assert code == 0
    assert stack.sqs.list_queues(QueueNamePrefix="i2v-tail-").get("QueueUrls", []) == []
    endpoints = [
        s["Endpoint"]
        for s in stack.sns.list_subscriptions_by_topic(TopicArn=stack.topic_arn)["Subscriptions"]
    ]
    assert not any("i2v-tail-" in endpoint for endpoint in endpoints)


def test_retry_runs_a_rejected_upload_again_once_its_sidecar_is_fixed(stack: LocalStack, cli: Cli) -> None:
    # Given an upload rejected for the options its sidecar gives
    key = unique_key(stack, "retry")
    sidecar = key.removesuffix(".png") + ".options.json"
    stack.upload(b'{"duration": 99}', sidecar)
    stack.upload(png(), key, {"options": sidecar})
    rejected = stack.wait_for_task(key, timeout=30)
    assert rejected["status"] == "REJECTED" and rejected["error"]["code"] == "INVALID_OPTIONS"

    # When the sidecar is fixed and the task retried
    stack.upload(b'{"duration": 4}', sidecar)
    retried = as_json(cli("retry", rejected["task_id"], "--wait", "--timeout", "60", "--json"))

    # Then a new task, named from the old one, went through every check and succeeded
    new_id = derive_task_id(stack.bucket, key, f"retry-{rejected['task_id']}")
    assert retried == {
        "retried_task_id": rejected["task_id"],
        "task_id": new_id,
        "key": key,
        "already_retried": False,
        "status": "SUCCEEDED",
    }
    task = stack.task(new_id)
    assert (
        task is not None
        and task["options"]["duration"] == 4
        and task["video"]["key"].endswith(f"{new_id}.mp4")
    )
    assert [t["task_id"] for t in stack.tasks_for(key)] == [rejected["task_id"], new_id]

    # And a second retry of the same task makes no other; a task that succeeded is not retried
    again = as_json(cli("retry", rejected["task_id"], "--json"))
    assert (again["task_id"], again["already_retried"], again["status"]) == (new_id, True, "SUCCEEDED")
    refused = cli("retry", new_id)
    assert refused.exit_code == Exit.REFUSED and "is SUCCEEDED" in refused.stderr
    assert len(stack.tasks_for(key)) == 2


def test_redrive_counts_then_moves_a_dead_lettered_upload_back_to_its_queue(
    stack: LocalStack, cli: Cli
) -> None:
    # Given an upload event in the uploads dead-letter queue (as after a long provider outage)
    key = unique_key(stack, "redrive")
    stack.upload(b"not an image", key)
    stack.wait_for_task(key, timeout=30)
    sequencer = f"redrive-{uuid.uuid4().hex}"
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T00:00:00.000Z",
        "s3": {"bucket": {"name": stack.bucket}, "object": {"key": key, "size": 12, "sequencer": sequencer}},
    }
    assert stack.dead_letter_queue_url is not None
    stack.sqs.send_message(
        QueueUrl=stack.dead_letter_queue_url, MessageBody=json.dumps({"Records": [record]})
    )

    # When redrive is asked first for the counts, then to move
    counted = as_json(cli("redrive", "--dry-run", "--json"))
    moved = as_json(cli("redrive", "--queue", "uploads", "--json"))

    # Then the dry run counted it and moved nothing; the redrive moved it, and it was submitted
    assert counted["dry_run"] is True
    assert [(q["queue"], q["waiting"], q["moved"]) for q in counted["queues"]] == [
        ("uploads", 1, 0), ("finalize", 0, 0), ("poll", 0, 0),
    ]  # fmt: skip
    assert [(q["queue"], q["waiting"], q["moved"]) for q in moved["queues"]] == [("uploads", 1, 1)]
    redriven = derive_task_id(stack.bucket, key, sequencer)
    deadline = time.monotonic() + 30
    while (task := stack.task(redriven)) is None or task["status"] != "REJECTED":
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_a_task_the_stack_does_not_have_is_exit_3(stack: LocalStack, cli: Cli) -> None:
    unknown = str(uuid.uuid4())
    by_id = cli("status", unknown)
    by_key = cli("status", unique_key(stack, "never"))
    retried = cli("retry", unknown)
    assert [r.exit_code for r in (by_id, by_key, retried)] == [Exit.NOT_FOUND] * 3
    assert f"no task {unknown}" in by_id.stderr and "no task for s3://" in by_key.stderr


def test_audit_reports_then_repairs_an_upload_whose_event_was_lost(stack: LocalStack, cli: Cli) -> None:
    # Given an upload whose S3 event was lost, older than the grace period asked for
    since = f"{time.time() - 1:.3f}"
    key = unique_key(stack, "audit lost")
    upload_without_event(stack, key)
    time.sleep(AUDIT_GRACE_SECONDS + 0.5)
    assert stack.tasks_for(key) == []

    # When the audit runs without repairs, then with them
    seen = as_json(
        cli("audit", "--since", since, "--grace", str(AUDIT_GRACE_SECONDS), "--no-repair", "--json")
    )
    human = cli("audit", "--since", since, "--grace", str(AUDIT_GRACE_SECONDS))

    # Then the first only reports it, the second re-sends it, under the id both named
    [found] = seen["uploads_without_task"]
    assert (found["key"], found["repaired"], seen["complete"]) == (key, False, True)
    assert human.exit_code == 0, human.output
    assert f"lost upload {key}: task {found['task_id']} (re-sent)" in " ".join(human.stdout.split())
    repaired = stack.wait_for_task(key, timeout=60)
    assert (repaired["task_id"], repaired["status"]) == (found["task_id"], "SUCCEEDED")


def test_cost_exports_the_attempts_charged_without_a_video_as_csv_and_json(
    stack: LocalStack, cli: Cli, simulator: Any, tmp_path: Path
) -> None:
    # Given a task the provider took, then failed
    since = f"{time.time() - 1:.3f}"
    simulator.set_faults(fail_tasks=1)
    key = unique_key(stack, "charged")
    stack.upload(png(), key, {"duration": "3"})
    failed = stack.wait_for_task(key, timeout=60)
    assert failed["status"] == "FAILED", failed

    # When its evidence is exported, as CSV to a file and as JSON to stdout
    as_csv = cli(
        "cost", "--since", since, "--charged-without-video", "--output", str(tmp_path / "refunds.csv")
    )
    rows = as_json(cli("cost", "--since", since, "--charged-without-video", "--format", "json"))

    # Then both hold the one attempt, with what the provider's support asks for
    assert as_csv.exit_code == 0, as_csv.output
    with (tmp_path / "refunds.csv").open(newline="") as written:
        csv_rows = list(csv.DictReader(written))
    [row] = rows
    assert [r["task_id"] for r in csv_rows] == [failed["task_id"]] == [row["task_id"]]
    assert row["provider"] == "magnific" and row["provider_task_id"] == failed["provider"]["task_id"]
    assert row["source_key"] == key and row["outcome"] == "failed" and row["error_code"]
    assert csv_rows[0]["provider_task_id"] == row["provider_task_id"]
    missing = cli("cost", "--charged-without-video", "--output", str(tmp_path / "no" / "refunds.csv"))
    assert missing.exit_code == Exit.NOT_FOUND and "no folder" in missing.stderr
