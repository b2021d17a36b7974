"""Cold start: what importing each Lambda handler module costs, and what a forged callback loads.

Every sample is a fresh interpreter, `python -X importtime -c "import <handler>"`, with the
Lambda environment the runtime sets (LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME, ...) and
the template's POWERTOOLS_* variables. Tracing is measured both ways: Powertools' Tracer
only really enables itself (and patches libraries for X-Ray) when LAMBDA_TASK_ROOT is set
and POWERTOOLS_TRACE_DISABLED is not true, which is the deployed case (Tracing: Active).

By default the interpreter runs in a throwaway virtualenv holding only what a function has
on Lambda: the layer's locked requirements (which pin boto3/botocore), installed
offline from uv's cache (the project's .venv also holds moto, requests, av, ... which the
X-Ray patcher would import and count). `--env venv` measures with the project's .venv.

The forged callback: a callback process invokes the handler twice (cold, then warm) with a
real-shaped webhook for a task the table does not hold (moto's server on loopback), expects
401, and lists the modules the first invocation imported. A second mode does only the table
read a 401 needs, after the same import: the lower bound a lazier callback could reach.

Run: .venv/bin/python bench/cold_start.py [--runs 15] [--callback-runs 5] [--env lambda|venv]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from measure import ROOT, Summary, lambda_like_python, load, machine

FUNCTIONS = ("submit", "callback", "reconcile")
TRACING = {"off": "true", "on": "false"}  # label -> POWERTOOLS_TRACE_DISABLED
TOP_MODULES = 8
REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE = "tasks"
FORGED_EVENT = ROOT / "events" / "apigw-callback-completed.json"
# Modules a refused (401) callback has no use for: the provider client and the video path.
NOT_NEEDED_FOR_401 = (
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "certifi",
    "standardwebhooks",
    "i2v.providers.magnific",
    "i2v.media.video",
)


@dataclass
class ImportSample:
    total_us: int
    process_ms: float
    cumulative_us: dict[str, int]
    depth: dict[str, int]
    self_us: dict[str, int]
    self_by_package_us: dict[str, int]
    module_count: int


@dataclass
class Config:
    function: str
    tracing: str
    samples: list[ImportSample] = field(default_factory=list)


# --- environments ------------------------------------------------------------------------


@contextmanager
def project_python() -> Iterator[Path]:
    yield ROOT / ".venv" / "bin" / "python"


def lambda_environment(function: str, trace_disabled: str) -> dict[str, str]:
    """What the Lambda runtime and template.yaml's Globals set before the handler is imported."""
    task_root = ROOT / "functions" / function
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONPATH": f"{task_root}{os.pathsep}{ROOT / 'layers' / 'pipeline'}",
        "LAMBDA_TASK_ROOT": str(task_root),
        "_HANDLER": f"{function}.handler",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{function}",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "happyhorse-i2v",
        "POWERTOOLS_METRICS_NAMESPACE": "HappyHorseI2V",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        "POWERTOOLS_TRACE_DISABLED": trace_disabled,
    }


# --- import time -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportLine:
    self_us: int
    cumulative_us: int
    name: str
    depth: int


def parse_importtime(stderr: str) -> list[ImportLine]:
    lines = []
    for raw in stderr.splitlines():
        if not raw.startswith("import time:") or "imported package" in raw:
            continue
        self_part, cumulative_part, name_part = raw.removeprefix("import time:").split("|", 2)
        name = name_part.rstrip()
        stripped = name.lstrip(" ")
        lines.append(
            ImportLine(int(self_part), int(cumulative_part), stripped, (len(name) - len(stripped) - 1) // 2)
        )
    return lines


def import_once(python: Path, function: str, trace_disabled: str) -> ImportSample:
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", f"import {function}, sys; print(len(sys.modules))"],
        env=lambda_environment(function, trace_disabled),
        capture_output=True,
        text=True,
        check=False,
    )
    process_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"importing {function} failed:\n{done.stderr[-3000:]}")
    lines = parse_importtime(done.stderr)
    handler = next(line for line in lines if line.name == function and line.depth == 0)
    self_by_package: dict[str, int] = defaultdict(int)
    for line in lines:
        self_by_package[line.name.split(".")[0]] += line.self_us
    return ImportSample(
        total_us=handler.cumulative_us,
        process_ms=process_ms,
        cumulative_us={line.name: line.cumulative_us for line in lines},
        depth={line.name: line.depth for line in lines},
        self_us={line.name: line.self_us for line in lines},
        self_by_package_us=dict(self_by_package),
        module_count=int(done.stdout.split()[-1]),
    )


def bare_interpreter_ms(python: Path, runs: int) -> Summary:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", "pass"], check=True, env={"PATH": os.environ["PATH"]})
        samples.append((time.perf_counter() - started) * 1000)
    return Summary.of(samples)


def measure_imports(python: Path, runs: int) -> list[Config]:
    configs = [Config(function, tracing) for function in FUNCTIONS for tracing in TRACING]
    for config in configs:  # warm-up, discarded: page cache and any missing .pyc
        import_once(python, config.function, TRACING[config.tracing])
    for _ in range(runs):  # interleaved, so drift on the machine touches every config alike
        for config in configs:
            config.samples.append(import_once(python, config.function, TRACING[config.tracing]))
    return configs


def report_imports(configs: list[Config], bare: Summary) -> None:
    runs = len(configs[0].samples)
    print(f"\n== Handler import, N={runs} fresh interpreters each; median [min-max] ==")
    print(f"bare interpreter start (python -c pass): {bare.show()} ms")
    print(f"{'function':<10} {'tracing':<8} {'import ms':>22} {'process ms':>22} {'modules':>8}")
    for config in configs:
        total = Summary.of([s.total_us / 1000 for s in config.samples])
        process = Summary.of([s.process_ms for s in config.samples])
        modules = Summary.of([s.module_count for s in config.samples])
        print(
            f"{config.function:<10} {config.tracing:<8} {total.show():>22} {process.show():>22} "
            f"{modules.median:>8.0f}"
        )
    for config in configs:
        print(f"\n-- {config.function}, tracing {config.tracing}: top {TOP_MODULES} by cumulative ms --")
        for name, summary, depth in top_cumulative(config):
            print(f"  {summary.show():>20}  {'  ' * depth}{name}")
        packages = median_by_key([s.self_by_package_us for s in config.samples])
        ranked = sorted(packages.items(), key=lambda item: item[1], reverse=True)[:TOP_MODULES]
        listing = ", ".join(f"{name} {us / 1000:.1f}" for name, us in ranked)
        print(f"  self ms by top-level package (medians): {listing}")
        own = median_by_key(
            [
                {n: us for n, us in s.self_us.items() if n.split(".")[0] in {"i2v", config.function}}
                for s in config.samples
            ]
        )
        ranked = sorted(own.items(), key=lambda item: item[1], reverse=True)[:TOP_MODULES]
        print(
            "  self ms of the project's own modules: " + ", ".join(f"{n} {us / 1000:.1f}" for n, us in ranked)
        )


def top_cumulative(config: Config) -> list[tuple[str, Summary, int]]:
    names = set(config.samples[0].cumulative_us) - {config.function}
    rows = []
    for name in names:
        values = [s.cumulative_us[name] / 1000 for s in config.samples if name in s.cumulative_us]
        rows.append((name, Summary.of(values), config.samples[0].depth[name]))
    rows.sort(key=lambda row: row[1].median, reverse=True)
    return rows[:TOP_MODULES]


def median_by_key(rows: list[dict[str, int]]) -> dict[str, float]:
    keys = {key for row in rows for key in row}
    return {key: Summary.of([row.get(key, 0) for row in rows]).median for key in keys}


# --- the forged callback -----------------------------------------------------------------

# Runs in the function's interpreter. Only json/os/sys/time are loaded before the baseline.
# Mode "handler" invokes the real handler twice. Mode "table-read" is the lower bound a
# lazier callback could reach: after the same import it does only what deciding a 401
# needs, one GetItem on the task table and a hash comparison.
FORGED_CALLBACK_CHILD = r"""
import json, os, sys, time

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    memory_limit_in_mb = 256
    aws_request_id = "bench-request"
    log_group_name = f"/aws/lambda/{function_name}"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 30_000

def refuse_by_table_read(event):
    import hashlib, hmac
    from i2v.wiring import task_store

    task = task_store().get(event["pathParameters"]["task_id"])
    presented = hashlib.sha256(event["queryStringParameters"]["token"].encode()).hexdigest()
    if task is None or not hmac.compare_digest(presented, task.token_hash or ""):
        return {"statusCode": 401}
    return {"statusCode": 200}

mode, event_path = sys.argv[1], sys.argv[2]
with open(event_path) as event_file:
    event = json.load(event_file)
started = time.perf_counter_ns()
import callback
imported = time.perf_counter_ns()
loaded_by_import = set(sys.modules)
if mode == "handler":
    answer = lambda: callback.handler(event, Context())
else:
    answer = lambda: refuse_by_table_read(event)
first = answer()
answered = time.perf_counter_ns()
loaded_by_first_call = sorted(set(sys.modules) - loaded_by_import)
second = answer()
answered_again = time.perf_counter_ns()
print("BENCH " + json.dumps({
    "import_ms": (imported - started) / 1e6,
    "first_call_ms": (answered - imported) / 1e6,
    "second_call_ms": (answered_again - answered) / 1e6,
    "status": [first["statusCode"], second["statusCode"]],
    "loaded_by_first_call": loaded_by_first_call,
    "loaded_in_total": sorted(sys.modules),
}))
"""


@dataclass(frozen=True)
class ForgedCallbackSample:
    import_ms: float
    first_call_ms: float
    second_call_ms: float
    first_call_import_ms: float
    first_call_imports_ms: dict[str, float]
    loaded_by_first_call: list[str]
    loaded_in_total: set[str]


CALLBACK_MODES = ("handler", "table-read")


def forged_callback_once(
    python: Path, endpoint: str, mode: str, trace_disabled: str, xray_port: int
) -> ForgedCallbackSample:
    env = {
        **lambda_environment("callback", trace_disabled),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "TABLE_NAME": TABLE,
        "BUCKET_NAME": "media",
        "TOPIC_ARN": f"arn:aws:sns:{REGION}:{ACCOUNT}:notifications",
        "API_KEY_SECRET_NAME": "happyhorse/api-key",
        "WEBHOOK_SECRET_NAME": "happyhorse/webhook-secret",
        "VIDEO_ALLOWED_HOSTS": "cdn.magnific.com",
        "_X_AMZN_TRACE_ID": "Root=1-69b30e37-5e1f0a2b3c4d5e6f7a8b9c0d;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{xray_port}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", FORGED_CALLBACK_CHILD, mode, str(FORGED_EVENT)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    result_line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if done.returncode != 0 or result_line is None:
        raise RuntimeError(f"the forged callback run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    result = json.loads(result_line.removeprefix("BENCH "))
    if result["status"] != [401, 401]:
        raise RuntimeError(f"a forged callback was answered {result['status']}, not 401")
    # Imports run inside a call start at depth 0, after the handler module's own line;
    # the second call imports nothing new, so all of these belong to the first.
    lines = parse_importtime(done.stderr)
    handler_index = next(i for i, line in enumerate(lines) if line.name == "callback" and line.depth == 0)
    in_call = {line.name: line.cumulative_us / 1000 for line in lines[handler_index + 1 :] if line.depth == 0}
    return ForgedCallbackSample(
        import_ms=result["import_ms"],
        first_call_ms=result["first_call_ms"],
        second_call_ms=result["second_call_ms"],
        first_call_import_ms=sum(in_call.values()),
        first_call_imports_ms=in_call,
        loaded_by_first_call=result["loaded_by_first_call"],
        loaded_in_total=set(result["loaded_in_total"]),
    )


@contextmanager
def udp_sink() -> Iterator[int]:
    """A loopback port for X-Ray segments, so an enabled tracer emits somewhere harmless."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield int(sink.getsockname()[1])


CallbackResults = dict[tuple[str, str], list[ForgedCallbackSample]]


def measure_forged_callback(python: Path, runs: int) -> CallbackResults:
    import boto3

    from local.moto_server import MotoServer

    keys = [(mode, tracing) for mode in CALLBACK_MODES for tracing in TRACING]
    results: CallbackResults = {key: [] for key in keys}
    with MotoServer() as moto, udp_sink() as xray_port:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=moto.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        dynamodb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "task_id", "AttributeType": "S"}],
        )
        for mode, tracing in keys:  # warm-up, discarded (moto's first answers are slower)
            forged_callback_once(python, moto.url, mode, TRACING[tracing], xray_port)
        for _ in range(runs):
            for mode, tracing in keys:
                sample = forged_callback_once(python, moto.url, mode, TRACING[tracing], xray_port)
                results[mode, tracing].append(sample)
    return results


def report_forged_callback(results: CallbackResults) -> None:
    runs = len(next(iter(results.values())))
    print(f"\n== Forged callback (unknown task -> 401), N={runs} fresh interpreters; median [min-max] ==")
    print("handler: the real handler; table-read: only the GetItem + hash a 401 needs (lower bound)")
    for (mode, tracing), samples in results.items():
        print(f"-- {mode}, tracing {tracing} --")
        print(f"  import callback:               {Summary.of([s.import_ms for s in samples]).show()} ms")
        print(f"  first (cold) 401 answer:       {Summary.of([s.first_call_ms for s in samples]).show()} ms")
        print(
            "    of which imports in the call: "
            f"{Summary.of([s.first_call_import_ms for s in samples]).show()} ms"
        )
        print(f"  second (warm) 401 answer:      {Summary.of([s.second_call_ms for s in samples]).show()} ms")
        imports = median_by_key(
            [{k: round(v * 1000) for k, v in s.first_call_imports_ms.items()} for s in samples]
        )
        ranked = sorted(imports.items(), key=lambda item: item[1], reverse=True)[:TOP_MODULES]
        print("    largest imports in the call: " + ", ".join(f"{n} {us / 1000:.1f}" for n, us in ranked))
        first_call = samples[0].loaded_by_first_call
        packages = sorted({name.split(".")[0] for name in first_call if not name.startswith("_")})
        own = sorted(name for name in first_call if name.startswith("i2v."))
        print(f"  modules first loaded by the 401 call: {len(first_call)}")
        print(f"    top-level packages: {', '.join(packages)}")
        print(f"    i2v modules: {', '.join(own) or '-'}")
        for name in NOT_NEEDED_FOR_401:
            when = (
                "by the 401 call"
                if name in first_call
                else "at import"
                if name in samples[0].loaded_in_total
                else "never"
            )
            print(f"    {name:<24} loaded {when}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per configuration")
    parser.add_argument("--callback-runs", type=int, default=5, help="forged-callback processes per mode")
    parser.add_argument("--env", choices=("lambda", "venv"), default="lambda")
    args = parser.parse_args()
    print(machine())
    environment = lambda_like_python() if args.env == "lambda" else project_python()
    with environment as python:
        print(
            f"interpreter environment: {args.env} "
            f"({'layer requirements only' if args.env == 'lambda' else 'project .venv'})"
        )
        started = time.perf_counter()
        configs = measure_imports(python, args.runs)
        report_imports(configs, bare_interpreter_ms(python, args.runs))
        report_forged_callback(measure_forged_callback(python, args.callback_runs))
        print(f"\n(benchmark took {time.perf_counter() - started:.0f} s; at the end: {load()})")


if __name__ == "__main__":
    main()
