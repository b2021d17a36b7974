"""`bench/run.py --quick` runs end to end and writes its JSON, report and charts.

No timing is asserted: CI machines are noisy. The numbers only have to be there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("cold_start", "stream", "burst", "aws_calls", "poll_delay", "cost", "image_check")
KEYS = {
    "cold_start": ["cold_start.max_ratio", "cold_start.required_max_ratio"],
    "stream": ["stream.max_peak_rss_mib", "stream.min_throughput_ratio"],
    "burst": [
        "webhook.ack_p95_ms",
        "webhook.timeouts",
        "burst.uploads",
        "burst.finished",
        "burst.duplicates",
        "burst.max_concurrent",
        "burst.limit",
    ],
    "aws_calls": ["aws_calls.dynamodb_reads", "aws_calls.dynamodb_writes"],
    "poll_delay": ["poll_delay.delay_seconds_p95", "poll_delay.tasks"],
    "cost": ["cost.ratio"],
    "image_check": ["image_check.max_peak_mib", "image_check.cost_ratio"],
}
CHARTS = {
    "cold_start": "bench-cold-start.png",
    "stream": "bench-stream.png",
    "burst": "bench-webhook-ack.png",
    "cost": "bench-cost.png",
}


def dotted(results: dict[str, Any], key: str) -> Any:
    value: Any = results
    for part in key.split("."):
        assert isinstance(value, dict) and part in value, f"{key} missing"
        value = value[part]
    return value


def test_quick_bench_writes_json_report_and_charts(tmp_path: Path) -> None:
    # Given / When: the quick run of every section present
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--sections", ",".join(SECTIONS), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )

    # Then: it succeeded, and every key holds a number
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["errors"] == {}
    for section in SECTIONS:
        for key in KEYS[section]:
            value = dotted(results, key)
            assert isinstance(value, int | float) and not isinstance(value, bool), f"{key} = {value!r}"
    for name, figures in results["cold_start"]["functions"].items():
        for figure in ("handler_ms", "floor_ms", "ratio", "required_floor_ms", "required_ratio"):
            assert all(isinstance(figures[figure][k], float | int) for k in ("median", "min", "max")), name
        assert figures["top_imports"], name
    # Counts are not timings: these hold on any machine
    burst = results["burst"]
    assert burst["finished"] == burst["uploads"] and burst["duplicates"] == 0, burst
    assert burst["max_concurrent"] <= burst["limit"]
    calls = results["aws_calls"]
    assert calls["dynamodb_reads"] == 0 and calls["dynamodb_writes"] <= 4, calls
    assert calls["dynamodb_writes_total"] <= 4 + calls["intermediate_statuses"], calls
    assert (tmp_path / "bench.md").stat().st_size > 0
    for section, chart in CHARTS.items():
        if section in SECTIONS:
            assert (tmp_path / chart).stat().st_size > 0, chart
