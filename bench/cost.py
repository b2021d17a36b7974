"""AWS cost per 1,000 videos at list prices, next to the provider's price for the same videos.

Quantities come from the pipeline's own numbers: memory sizes, batch size and schedule from
template.yaml; AWS calls per task from the `aws_calls` section when it ran in the same
`make bench`, else from the calls the `cold_start` section recorded (submit, the IN_PROGRESS
and COMPLETED webhooks, a reconcile run); durations and log bytes from `cold_start`'s cold
handler processes. What cannot be measured here is an assumption, listed in the output.
Prices are parameters (below), never facts of the code: each carries its source and date.

Run through `make bench` (it needs `cold_start` or `aws_calls` earlier in the same run).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from measure import ROOT

sys.path.insert(0, str(ROOT))

VIDEOS = 1000
MIB = 1024 * 1024
GB = 1024**3  # AWS bills storage and transfer per GiB ("GB" in its price lists)
AS_OF = "list price as published in 2026 (per the author's knowledge; not re-checked online)"


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str
    sure: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"usd": self.usd, "per": self.per, "source": self.source, "as_of": AS_OF, "sure": self.sure}


PRICES: dict[str, Price] = {
    "lambda_arm64_gb_second": Price(
        0.0000133334, "GB-second", "AWS Lambda pricing, us-east-1, Arm, first 7.5B GB-s"
    ),
    "lambda_request": Price(0.20 / 1e6, "request", "AWS Lambda pricing, us-east-1"),
    "http_api_request": Price(
        1.00 / 1e6, "request (512 KB increments)", "Amazon API Gateway pricing, HTTP APIs, first 300M"
    ),
    "sqs_request": Price(
        0.40 / 1e6, "request (64 KB chunks)", "Amazon SQS pricing, standard queue, after the free 1M"
    ),
    "dynamodb_write_request_unit": Price(
        0.625 / 1e6, "write request unit", "Amazon DynamoDB on-demand pricing, Standard table class"
    ),
    "dynamodb_read_request_unit": Price(
        0.125 / 1e6, "read request unit", "Amazon DynamoDB on-demand pricing, Standard table class"
    ),
    "sns_publish": Price(0.50 / 1e6, "publish request (64 KB chunks)", "Amazon SNS pricing, standard topics"),
    "s3_put_request": Price(0.005 / 1000, "PUT/COPY/POST/LIST request", "Amazon S3 pricing, S3 Standard"),
    "s3_get_request": Price(0.0004 / 1000, "GET/HEAD request", "Amazon S3 pricing, S3 Standard"),
    "s3_storage_gb_month": Price(0.023, "GB-month", "Amazon S3 pricing, S3 Standard, first 50 TB"),
    "data_transfer_out_gb": Price(
        0.09,
        "GB to the internet",
        "Amazon EC2 data transfer pricing, first 10 TB (after the free 100 GB)",
        sure=False,
    ),
    "secrets_manager_api_call": Price(0.05 / 10_000, "API call", "AWS Secrets Manager pricing"),
    "secrets_manager_secret_month": Price(0.40, "secret-month", "AWS Secrets Manager pricing"),
    "cloudwatch_logs_ingest_gb": Price(
        0.50, "GB ingested", "Amazon CloudWatch pricing, Logs, Standard class"
    ),
    "cloudwatch_custom_metric_month": Price(
        0.30, "metric-month", "Amazon CloudWatch pricing, first 10,000 metrics"
    ),
    # The provider: Magnific does not publish its HappyHorse price (../shared/PROVIDERS.md).
    "provider_second_1080p": Price(
        0.28,
        "generated second, 1080P",
        "fal.ai / WaveSpeed HappyHorse I2V (Magnific's own: unknown)",
        sure=False,
    ),
    "provider_second_1080p_aimlapi": Price(
        0.312, "generated second, 1080P", "AI/ML API HappyHorse (for comparison)", sure=False
    ),
}

# What this machine cannot measure; each is written into the output.
ASSUMED = {
    "video_mib": (10.0, "a 5 s 1080P H.264 MP4 from the provider (the simulator's is tiny)"),
    "image_mib": (2.0, "an uploaded photo (the benchmark's PNG is smaller)"),
    "video_stream_mib_per_s": (20.0, "download + upload throughput of the callback function on Lambda"),
    "cpu_scaling": (
        True,
        "Lambda gives CPU in proportion to memory (1,769 MB = 1 vCPU): local ms x 1769/MemorySize",
    ),
    "every_invocation_cold": (True, "billed duration = import (INIT, billed since Aug 2025) + first call"),
    "webhooks_per_task": (2, "IN_PROGRESS and COMPLETED, as the simulator sends them"),
    "sqs_requests_per_upload": (
        6,
        "uploads queue: S3's SendMessage, the event source's ReceiveMessage and DeleteMessageBatch;"
        " finalize queue: the callback's SendMessage, ReceiveMessage, DeleteMessageBatch",
    ),
    "sqs_idle_poll_requests_month": (
        3 * 648_000,
        "Lambda's 5 idle long-pollers on each of the 3 queues it reads (uploads, finalize, polls),"
        " 20 s polls",
    ),
    "finalize_metrics": (
        3,
        "TasksSucceeded, BytesDownloaded, GenerationSeconds: what the finalize leg emits (read"
        " from i2v/usecases; the cold-start events do not reach it)",
    ),
    "lambda_platform_log_bytes": (350, "START/END/REPORT lines per invocation"),
    "videos_per_month": (
        VIDEOS,
        "monthly fixed costs (secrets, metrics, reconciler, idle polls) charged to these videos",
    ),
}
LAMBDA_VCPU_MB = 1769
SECONDS_PER_MONTH = 30 * 24 * 3600


def template_facts() -> dict[str, Any]:
    from local.template import load_template

    template = load_template(ROOT / "template.yaml")
    resources = template["Resources"]
    parameters = template["Parameters"]
    default_memory = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    memory = {
        logical_id: int(spec["Properties"].get("MemorySize", default_memory))
        for logical_id, spec in resources.items()
        if spec["Type"] == "AWS::Serverless::Function"
    }
    tables = [spec for spec in resources.values() if spec["Type"] == "AWS::DynamoDB::Table"]
    gsis = len(tables[0]["Properties"].get("GlobalSecondaryIndexes", [])) if tables else 0
    schedule = str(parameters["ReconcileSchedule"]["Default"])
    number, unit = schedule.removeprefix("rate(").removesuffix(")").split()
    seconds = float(number) * {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}.get(unit, 60)
    return {
        "memory_mb": memory,
        "table_gsis": gsis,
        "reconcile_runs_month": SECONDS_PER_MONTH / seconds,
        "reconcile_schedule": schedule,
        "default_resolution": str(parameters["DefaultResolution"]["Default"]),
        "default_duration_s": int(parameters["DefaultDuration"]["Default"]),
    }


def _count(calls: dict[str, float], service: str, operations: set[str] | None = None) -> float:
    return sum(
        n
        for name, n in calls.items()
        if name.split(".")[0] == service and (operations is None or name.split(".")[1] in operations)
    )


DYNAMODB_READS = {"GetItem", "Query", "Scan", "BatchGetItem"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


def run(quick: bool, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `cost` section of `make bench`; `quick` changes nothing (no measuring here)."""
    del quick
    results = results or {}
    cold = results.get("cold_start")
    if cold is None:
        raise RuntimeError(
            "cost needs the cold_start section earlier in the same run (its calls and durations)"
        )
    facts = template_facts()
    functions = cold["functions"]
    per_task_invocations = {
        "submit": ("SubmitFunction", functions["submit"]),
        "callback (IN_PROGRESS)": ("CallbackFunction", cold["callback_progress"]),
        "callback (COMPLETED)": ("CallbackFunction", functions["callback"]),
        # The finalize leg (an SQS batch of one on the callback function) is not among the
        # cold-start events: its start-up is taken as the COMPLETED webhook's, plus the video.
        "finalize": ("CallbackFunction", functions["callback"]),
    }
    calls: dict[str, float] = {}
    for _, figures in per_task_invocations.values():
        for name, n in figures["calls_per_event"].items():
            calls[name] = calls.get(name, 0) + n

    aws_calls = results.get("aws_calls")
    if aws_calls is not None:
        # Every write is billed, the intermediate statuses' too.
        reads = float(aws_calls["dynamodb_reads"])
        writes = float(aws_calls.get("dynamodb_writes_total", aws_calls["dynamodb_writes"]))
        dynamodb_from = "aws_calls section (same run)"
    else:
        reads, writes = _count(calls, "dynamodb", DYNAMODB_READS), _count(calls, "dynamodb", DYNAMODB_WRITES)
        dynamodb_from = "cold_start's recorded calls (submit + 2 webhooks); no aws_calls section ran"

    item_kib = max(1, math.ceil(float(cold.get("task_item_bytes") or 1024) / 1024))
    wru_per_write = item_kib * (1 + facts["table_gsis"])  # upper bound: every write also rewrites each GSI
    rru_per_read = max(1, math.ceil(item_kib / 4))  # strongly consistent, 4 KB each

    lines: list[dict[str, Any]] = []

    def line(item: str, quantity: float, price: str, note: str = "", fixed: bool = False) -> None:
        p = PRICES[price]
        lines.append(
            {
                "item": item,
                "quantity": round(quantity, 4),
                "unit": p.per,
                "unit_price_usd": p.usd,
                "usd": quantity * p.usd,
                "price": price,
                "fixed_monthly": fixed,
                "note": note,
            }
        )

    # Lambda: requests and GB-seconds (every invocation cold, CPU scaled to the memory size).
    gb_seconds = 0.0
    for label, (logical_id, figures) in per_task_invocations.items():
        memory = facts["memory_mb"][logical_id]
        ms = figures["handler_ms"]["median"] * (LAMBDA_VCPU_MB / memory if ASSUMED["cpu_scaling"][0] else 1)
        if label == "finalize":
            ms += 1000 * ASSUMED["video_mib"][0] / ASSUMED["video_stream_mib_per_s"][0]
        gb_seconds += ms / 1000 * memory / 1024
    line(
        "Lambda requests",
        len(per_task_invocations) * VIDEOS,
        "lambda_request",
        "submit + 2 webhooks + finalize per task",
    )
    line(
        "Lambda duration",
        gb_seconds * VIDEOS,
        "lambda_arm64_gb_second",
        "cold, scaled to the memory's CPU share",
    )
    reconcile_memory = facts["memory_mb"]["ReconcileFunction"]
    reconcile_s = functions["reconcile"]["handler_ms"]["median"] / 1000 * LAMBDA_VCPU_MB / reconcile_memory
    runs = facts["reconcile_runs_month"]
    line("Lambda requests, reconciler", runs, "lambda_request", facts["reconcile_schedule"], fixed=True)
    line(
        "Lambda duration, reconciler",
        runs * reconcile_s * reconcile_memory / 1024,
        "lambda_arm64_gb_second",
        "every run cold",
        fixed=True,
    )
    line("HTTP API requests", ASSUMED["webhooks_per_task"][0] * VIDEOS, "http_api_request", "the webhooks")
    line(
        "SQS requests",
        ASSUMED["sqs_requests_per_upload"][0] * VIDEOS,
        "sqs_request",
        "uploads + finalize queues",
    )
    line("SQS idle polling", ASSUMED["sqs_idle_poll_requests_month"][0], "sqs_request", "", fixed=True)
    line(
        "DynamoDB writes",
        writes * wru_per_write * VIDEOS,
        "dynamodb_write_request_unit",
        f"{writes:g} writes/task x {wru_per_write} WRU ({item_kib} KB item, {facts['table_gsis']} GSIs)",
    )
    line(
        "DynamoDB reads",
        reads * rru_per_read * VIDEOS,
        "dynamodb_read_request_unit",
        f"{reads:g} reads/task, strongly consistent",
    )
    reconcile_reads = _count(functions["reconcile"]["calls_per_event"], "dynamodb", DYNAMODB_READS)
    line("DynamoDB reads, reconciler", runs * reconcile_reads, "dynamodb_read_request_unit", "", fixed=True)
    line("SNS publishes", 1 * VIDEOS, "sns_publish", "one per outcome (the finalize leg's)")
    parts = max(1, math.ceil(ASSUMED["video_mib"][0] / 8))
    video_puts = 1 if parts == 1 else parts + 2  # PutObject, or create + parts + complete
    line(
        "S3 PUT requests",
        (1 + video_puts) * VIDEOS,
        "s3_put_request",
        f"the upload + {video_puts} for the video",
    )
    s3_gets = _count(calls, "s3", {"GetObject", "HeadObject"}) + 1  # + the provider's presigned GET
    line("S3 GET requests", s3_gets * VIDEOS, "s3_get_request", "head reads + the provider's fetch")
    stored_gb = (ASSUMED["video_mib"][0] + ASSUMED["image_mib"][0]) * MIB * VIDEOS / GB
    line("S3 storage, one month", stored_gb, "s3_storage_gb_month", "videos + images")
    line(
        "Data transfer out",
        ASSUMED["image_mib"][0] * MIB * VIDEOS / GB,
        "data_transfer_out_gb",
        "the provider fetches each image; transfer in is free",
    )
    line(
        "Secrets Manager API calls",
        _count(calls, "secretsmanager") * VIDEOS,
        "secrets_manager_api_call",
        "one per cold process",
    )
    line("Secrets Manager secrets", 2, "secrets_manager_secret_month", "API key + webhook secret", fixed=True)
    log_bytes = sum(
        f["log_bytes"] + ASSUMED["lambda_platform_log_bytes"][0] for _, f in per_task_invocations.values()
    )  # the finalize leg's counted as the COMPLETED webhook's
    line(
        "CloudWatch Logs ingestion",
        log_bytes * VIDEOS / GB,
        "cloudwatch_logs_ingest_gb",
        "measured log lines",
    )
    line(
        "CloudWatch custom metrics",
        len(cold.get("emf_metrics", [])) + ASSUMED["finalize_metrics"][0],
        "cloudwatch_custom_metric_month",
        "EMF: measured on the cold-start events + the finalize leg's",
        fixed=True,
    )

    variable = sum(item["usd"] for item in lines if not item["fixed_monthly"])
    fixed = sum(item["usd"] for item in lines if item["fixed_monthly"])
    aws = variable + fixed
    seconds = facts["default_duration_s"]
    provider = VIDEOS * seconds * PRICES["provider_second_1080p"].usd
    for item in lines:
        item["usd"] = round(item["usd"], 6)
    return {
        "cost": {
            "videos": VIDEOS,
            "video": f"{seconds} s at {facts['default_resolution']} (the stack's defaults)",
            "aws_usd": round(aws, 4),
            "aws_variable_usd": round(variable, 4),
            "aws_fixed_monthly_usd": round(fixed, 4),
            "provider_usd": round(provider, 2),
            "provider_usd_aimlapi": round(VIDEOS * seconds * PRICES["provider_second_1080p_aimlapi"].usd, 2),
            "ratio": aws / provider,
            # Per video, without the month's fixed costs (secrets, metrics, idle polls, reconciler):
            # what one more 1,000 videos cost.
            "ratio_variable": variable / provider,
            "dynamodb_counts_from": dynamodb_from,
            "dynamodb_per_task": {"reads": reads, "writes": writes},
            "aws_calls_per_task": calls,
            "lines": lines,
            "prices": {name: price.as_json() for name, price in PRICES.items()},
            "assumptions": {name: {"value": value, "why": why} for name, (value, why) in ASSUMED.items()},
            "template": facts,
            "not_counted": [
                "metrics only a failure emits (each is a metric-month once it has been emitted)",
                "the user's own download of the video; X-Ray (tracing is off here, on when deployed)",
                "free tiers (list prices only)",
            ],
        }
    }
