"""A chaos run: the plan's uploads through the local stack with every route and the faults
on, then what became of each upload, read from the table, the bucket, the topic, the
simulators' records and the fault log (local/chaos/report.py turns it into figures)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from local.chaos.plan import (
    FUNCTION_TIMEOUT_SECONDS,
    ROUTES,
    TASK_DEADLINE_SECONDS,
    VISIBILITY_TIMEOUT_SECONDS,
    ChaosPlan,
    Upload,
    fault_log,
    image_bytes,
)
from local.simulators.core.chaos import upload_key
from local.stack import LocalStack

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
UPLOAD_THREADS = 4
CHECK_EVERY_SECONDS = 2.0
# Past the last upload's deadline: the reconciler's tick and the finalize order's run.
WAIT_MARGIN_SECONDS = 45.0
SETTLE_SECONDS = 2.0


@dataclass
class RunRecord:
    """What was observed; local/chaos/report.py makes the figures from it."""

    plan: ChaosPlan
    uploads: list[Upload]
    uploaded_at: dict[str, float]  # key -> epoch seconds of its PUT
    started_at: float
    finished_at: float
    tasks: list[dict[str, Any]]
    notifications: list[dict[str, Any]]  # task id, status, event id, published at
    videos: list[dict[str, Any]]  # key, version
    provider_tasks: list[dict[str, Any]]  # route, upload key, provider task id (each one made)
    faults: list[dict[str, Any]]


def run(plan: ChaosPlan, folder: Path, *, progress: Callable[[str], None] = log.info) -> RunRecord:
    """Run `plan` on a fresh local stack; its logs and fault log go to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    fault_log(folder).unlink(missing_ok=True)
    uploads = plan.schedule()
    with (
        (folder / "functions.log").open("wb") as function_log,
        LocalStack(
            routes=ROUTES,
            environment=plan.environment(folder),
            reconcile_interval_seconds=1,
            simulator_options=plan.simulator_options(folder),
            function_log=function_log,
            function_timeout_seconds=FUNCTION_TIMEOUT_SECONDS,
            visibility_timeout_seconds=VISIBILITY_TIMEOUT_SECONDS,
        ) as stack,
    ):
        progress(f"stack up; {len(uploads)} uploads over {plan.spread_seconds:.0f} s, seed {plan.seed}")
        started = time.time()
        uploaded_at = _upload_on_schedule(stack, uploads, started)
        progress(f"uploaded in {time.time() - started:.0f} s; waiting for every task to end")
        tasks = _wait_until_ended(
            stack,
            uploads,
            deadline=time.time() + TASK_DEADLINE_SECONDS + WAIT_MARGIN_SECONDS,
            progress=progress,
        )
        time.sleep(SETTLE_SECONDS)  # late duplicates (webhooks, notifications) arrive
        tasks = scan_tasks(stack)
        finished = time.time()
        # Kept with the logs: what to read when a target is missed.
        (folder / "tasks.json").write_text(json.dumps(tasks, indent=1, default=str), encoding="utf-8")
        record = RunRecord(
            plan=plan,
            uploads=uploads,
            uploaded_at=uploaded_at,
            started_at=started,
            finished_at=finished,
            tasks=tasks,
            notifications=[
                {
                    "task_id": n.task_id,
                    "status": n.message.get("status"),
                    "event_id": n.message.get("event_id"),
                    "published_at": n.published_at,
                }
                for n in stack.notifications()
            ],
            videos=[{"key": v["Key"], "version": v.get("VersionId")} for v in stack.video_objects()],
            provider_tasks=_provider_tasks(stack),
            faults=read_faults(fault_log(folder)),
        )
    return record


def _upload_on_schedule(stack: LocalStack, uploads: list[Upload], started: float) -> dict[str, float]:
    uploaded_at: dict[str, float] = {}

    def put(index_upload: tuple[int, Upload]) -> None:
        index, upload = index_upload
        time.sleep(max(0.0, started + upload.at - time.time()))
        metadata = {"provider": upload.route} if upload.route else {}
        uploaded_at[upload.key] = time.time()
        stack.upload(image_bytes(upload.image, index), upload.key, metadata)

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(put, enumerate(uploads)))
    return uploaded_at


def _wait_until_ended(
    stack: LocalStack, uploads: list[Upload], *, deadline: float, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Until every upload has a terminal task and its notification, or the deadline."""
    keys = {upload.key for upload in uploads}
    last_report = 0.0
    while True:
        tasks = scan_tasks(stack)
        notified = {n.task_id for n in stack.notifications()}
        done = {
            task["source"]["key"]
            for task in tasks
            if task["status"] in TERMINAL and task["task_id"] in notified
        }
        if keys <= done or time.time() > deadline:
            return tasks
        if time.time() - last_report > 30:
            progress(f"{len(done & keys)}/{len(keys)} uploads ended and notified")
            last_report = time.time()
        time.sleep(CHECK_EVERY_SECONDS)


_DESERIALIZER = TypeDeserializer()


def scan_tasks(stack: LocalStack) -> list[dict[str, Any]]:
    """Every task item (the route breakers' items left out)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.table, "ConsistentRead": True}
    while True:
        page = stack.dynamodb.scan(**kwargs)
        for item in page["Items"]:
            plain = {k: _DESERIALIZER.deserialize(v) for k, v in item.items()}
            if "status" in plain and "source" in plain:
                items.append(plain)
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _provider_tasks(stack: LocalStack) -> list[dict[str, Any]]:
    """Every task a simulator made, with the upload its image URL points at."""
    made = []
    for route, simulator in stack.simulators.items():
        for request in simulator.state()["create_requests"]:
            if request.get("task_id"):
                made.append(
                    {
                        "route": route,
                        "upload": upload_key(request.get("body")),
                        "provider_task_id": request["task_id"],
                        "answered": request.get("response_status") is not None,
                    }
                )
    return made


def read_faults(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
