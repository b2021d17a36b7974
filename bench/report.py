"""bench.md and its charts from bench.json's results: every figure next to its target.

All chart code is here. A section's table shows what it returned; PASS/MISS is computed
from the numbers, never typed in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

COLD_START_TARGET = 1.25
COLD_START_TARGETED = ("submit", "callback", "reconcile")
# The whole-file image check holds one 1 MiB read and one inflated piece, whatever the image.
IMAGE_CHECK_PEAK_MIB = 8


def _get(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**MISS**")


def _span(figures: dict[str, float], fmt: str = ".1f") -> str:
    return f"{figures['median']:{fmt}} [{figures['min']:{fmt}}-{figures['max']:{fmt}}]"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, value, target, verdict) for every target whose figure ran."""
    rows: list[tuple[str, str, str, bool | None]] = []
    functions = _get(results, "cold_start.functions") or {}
    for name in COLD_START_TARGETED:
        if name in functions:
            ratio = functions[name]["ratio"]["median"]
            required = (functions[name].get("required_ratio") or {}).get("median")
            rows.append(
                (
                    f"cold start {name} / floor",
                    f"{ratio:.2f}"
                    + (f" (required floor {required:.2f}: the libraries alone)" if required else ""),
                    f"<= {COLD_START_TARGET}",
                    ratio <= COLD_START_TARGET,
                )
            )

    def check(figure: str, target: str, test: Callable[[float], bool]) -> None:
        value = _get(results, figure)
        if isinstance(value, int | float):
            rows.append((figure, f"{value:g}", target, test(float(value))))

    check("stream.min_throughput_ratio", ">= 0.9", lambda v: v >= 0.9)
    check("stream.max_peak_rss_mib", "<= 128", lambda v: v <= 128)
    check("webhook.timeouts", "0", lambda v: v == 0)
    uploads = _get(results, "burst.uploads")
    check("burst.finished", f"= burst.uploads ({uploads})", lambda v: v == uploads)
    check("burst.duplicates", "0", lambda v: v == 0)
    limit = _get(results, "burst.limit")
    check("burst.max_concurrent", f"<= burst.limit ({limit})", lambda v: limit is not None and v <= limit)
    check("aws_calls.dynamodb_reads", "0", lambda v: v == 0)
    extra = _get(results, "aws_calls.intermediate_statuses") or 0
    check("aws_calls.dynamodb_writes", "<= 4 (without the intermediate statuses' writes)", lambda v: v <= 4)
    check(
        "aws_calls.dynamodb_writes_total",
        f"<= {4 + extra} (4 + {extra} intermediate)",
        lambda v: v <= 4 + extra,
    )
    interval = _get(results, "poll_delay.interval_seconds")
    if interval is not None:
        check(
            "poll_delay.delay_seconds_p95",
            f"<= {interval + 10} (interval + 10 s)",
            lambda v: v <= interval + 10,
        )
    check(
        "image_check.max_peak_mib",
        f"<= {IMAGE_CHECK_PEAK_MIB} (bounded)",
        lambda v: v <= IMAGE_CHECK_PEAK_MIB,
    )
    check("image_check.cost_ratio", ">= 1000 (checks one refused paid call pays for)", lambda v: v >= 1000)
    return rows


# --- charts ----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_cold_start(cold: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = list(cold["functions"])
    figure, (times, ratios) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.27
    for offset, key, label, color in (
        (-width, "handler_ms", "handler", "#d62728"),
        (0.0, "required_floor_ms", "floor + Powertools, pydantic, httpx", "#ff7f0e"),
        (width, "floor_ms", "floor (bare boto3)", "#7f7f7f"),
    ):
        if not all(cold["functions"][n].get(key) for n in names):
            continue
        medians = [cold["functions"][n][key]["median"] for n in names]
        low = [m - cold["functions"][n][key]["min"] for m, n in zip(medians, names, strict=True)]
        high = [cold["functions"][n][key]["max"] - m for m, n in zip(medians, names, strict=True)]
        positions = [i + offset for i in range(len(names))]
        times.bar(positions, medians, width, label=label, color=color, yerr=[low, high], capsize=4)
    times.set_xticks(range(len(names)), names)
    times.set_ylabel("spawn to answer, ms (median, min-max)")
    times.set_title(f"Cold start, {cold['pairs']} alternating pairs")
    times.legend()
    medians = [cold["functions"][n]["ratio"]["median"] for n in names]
    low = [m - cold["functions"][n]["ratio"]["min"] for m, n in zip(medians, names, strict=True)]
    high = [cold["functions"][n]["ratio"]["max"] - m for m, n in zip(medians, names, strict=True)]
    ratios.bar([i - 0.2 for i in range(len(names))], medians, 0.38, color="#1f77b4", yerr=[low, high],
               capsize=4, label="handler")  # fmt: skip
    if all(cold["functions"][n].get("required_ratio") for n in names):
        req = [cold["functions"][n]["required_ratio"] for n in names]
        medians = [r["median"] for r in req]
        ratios.bar(
            [i + 0.2 for i in range(len(names))], medians, 0.38, color="#ff7f0e", capsize=4,
            yerr=[[m - r["min"] for m, r in zip(medians, req, strict=True)],
                  [r["max"] - m for m, r in zip(medians, req, strict=True)]],
            label="required floor (the libraries that stay)",
        )  # fmt: skip
    ratios.axhline(COLD_START_TARGET, color="#2ca02c", linestyle="--", label=f"target {COLD_START_TARGET}")
    ratios.set_xticks(range(len(names)), names)
    ratios.set_ylabel("to the floor (per round)")
    ratios.set_title("Ratio to the floor")
    ratios.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chart_stream(stream: dict[str, Any], path: Path) -> bool:
    """Throughput ratio to the baseline per body size, with its spread, if returned per size."""
    rows = stream.get("sizes")
    if not isinstance(rows, list) or not rows:
        return False
    points = [
        (row["size_mib"], row["ratio"])
        for row in rows
        if isinstance(row, dict) and isinstance(row.get("ratio"), dict) and "size_mib" in row
    ]
    if not points:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.8))
    medians = [float(r["median"]) for _, r in points]
    low = [m - float(r.get("low", r.get("min", m))) for m, (_, r) in zip(medians, points, strict=True)]
    high = [float(r.get("high", r.get("max", m))) - m for m, (_, r) in zip(medians, points, strict=True)]
    axis.errorbar(
        [s for s, _ in points], medians, yerr=[low, high], marker="o", capsize=4, label="ours / baseline"
    )
    axis.axhline(0.9, color="#2ca02c", linestyle="--", label="target 0.9")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("body MiB")
    axis.set_ylabel("throughput ratio")
    axis.set_title("Video streaming")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def chart_histogram(samples: list[float], title: str, xlabel: str, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.hist(samples, bins=min(40, max(5, len(samples) // 5)), color="#1f77b4")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("requests")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chart_cost(cost: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    lines = sorted(cost["lines"], key=lambda item: item["usd"])
    figure, axis = plt.subplots(figsize=(8, 0.28 * len(lines) + 1.2))
    axis.barh([item["item"] for item in lines], [item["usd"] for item in lines], color="#ff7f0e")
    axis.set_xlabel(f"USD per {cost['videos']:,} videos (provider: ${cost['provider_usd']:,.0f})")
    axis.set_title(f"AWS cost ${cost['aws_usd']:.3f} = {cost['ratio']:.2e} x the provider's")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- markdown --------------------------------------------------------------------------------


def _cold_start_md(cold: dict[str, Any], out: Path) -> list[str]:
    chart_cold_start(cold, out / "bench-cold-start.png")
    md = [
        "## Cold start",
        "",
        "**Method.** Each handler sample is a fresh interpreter with the function's environment",
        "(template Environment + local overrides + what Lambda's runtime sets; tracing off) that",
        "imports the handler module and serves one event; timed from spawn to the answer. The floor is a",
        "fresh interpreter, same environment, importing bare boto3 and replaying the AWS calls that",
        "handler process made (recorded in it by wrapping botocore's `_make_api_call`), same",
        "parameters, same endpoint (moto's server on loopback). The required floor is that floor",
        "plus only the libraries the issue keeps, loaded and used as the handler uses them",
        "(Powertools' Logger, Metrics, Tracer and batch or HTTP resolver; one pydantic model",
        "validated; httpx with a client for submit; standardwebhooks for callback), nothing of",
        "the project's own: no handler built on them can go below it. Rounds alternate H, F, R;",
        "the first rounds run under `-X importtime` and double as the warm-up.",
        f"Interpreter: {cold['interpreter']}.",
        "Events: " + "; ".join(f"`{k}`: {v}" for k, v in cold["events"].items()) + ".",
        "Non-AWS HTTP (the provider's create call, the video download) is in the handler's time,",
        "not in the floor's.",
        "",
        "| function | handler ms | floor ms | ratio | target | | required floor ratio | import ms "
        "| first call ms | AWS calls ms | other HTTP ms | floor: import boto3 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in cold["functions"].items():
        targeted = name in COLD_START_TARGETED
        verdict = _verdict(f["ratio"]["median"] <= COLD_START_TARGET) if targeted else "(not targeted)"
        md.append(
            f"| {name} | {_span(f['handler_ms'])} | {_span(f['floor_ms'])} | {_span(f['ratio'], '.2f')} | "
            f"<= {COLD_START_TARGET} | {verdict} | "
            f"{_span(f['required_ratio'], '.2f') if f.get('required_ratio') else 'n/a'} | "
            f"{_span(f['handler_import_ms'])} | "
            f"{_span(f['handler_first_call_ms'])} | {_span(f['handler_aws_calls_ms'])} | "
            f"{_span(f['handler_other_http_ms'])} | {_span(f['floor_import_boto3_ms'])} |"
        )
    md += [
        "",
        f"`cold_start.max_ratio` = **{cold['max_ratio']:.2f}**",
        "",
    ]
    if "required_max_ratio" in cold:
        impossible = cold.get("target_impossible") or []
        md += [
            f"`cold_start.required_max_ratio` = **{cold['required_max_ratio']:.2f}**: "
            + (
                f"the required floor alone is above {COLD_START_TARGET} for {', '.join(impossible)}, "
                "so no handler keeping Powertools, pydantic and httpx can meet the target there; "
                "the handler's ratio is the nearest figure reached."
                if impossible
                else f"the required floor is within {COLD_START_TARGET} for every targeted function."
            ),
            "",
        ]
    md += [
        "",
        "![cold start](bench-cold-start.png)",
        "",
    ]
    md += ["AWS calls per event (last handler sample; the floor's outcome of each replayed call):", ""]
    for name, f in cold["functions"].items():
        calls = ", ".join(f["aws_calls"]) or "none"
        http = ", ".join(f["other_http_calls"]) or "none"
        md.append(f"- `{name}`: {calls}; floor: {', '.join(f['floor_outcomes'])}; other HTTP: {http}")
    md += ["", "Where the time goes (`-X importtime`, medians; cumulative times nest):", ""]
    for name, f in cold["functions"].items():
        if not f["top_imports"]:
            continue
        tops = ", ".join(
            f"{t['module']} {t['cumulative_ms']:.0f}{' (first call)' if t['loaded'] == 'first call' else ''}"
            for t in f["top_imports"]
        )
        packages = ", ".join(f"{p['package']} {p['self_ms']:.0f}" for p in f["self_ms_by_package"])
        md.append(f"- `{name}` top cumulative ms: {tops}. Self ms by package: {packages}.")
    md += [
        "",
        "What each handler imports that its floor never loads (self time of those modules,",
        "median over the profiled rounds), against what the target leaves it (0.25 x the floor):",
        "",
        "| function | handler-only imports ms | budget over the floor ms | largest packages (ms) |",
        "|---|---|---|---|",
    ]
    for name, f in cold["functions"].items():
        only = f.get("handler_only_imports")
        if not only or name not in COLD_START_TARGETED:
            continue
        packages = ", ".join(f"{p['package']} {p['self_ms']:.0f}" for p in only["by_package"][:6])
        md.append(f"| {name} | {only['total_ms']:.0f} | {f['budget_over_floor_ms']:.0f} | {packages} |")
    md.append("")
    return md


def _stream_md(stream: dict[str, Any], out: Path) -> list[str]:
    md = ["## Video streaming (`bench/video_stream.py`)", "", *_plain_table(stream), ""]
    sizes = stream.get("sizes")
    if isinstance(sizes, list) and sizes:
        md += [
            "| body MiB | ours MiB/s | upload_fileobj MiB/s | ratio | our peak RSS MiB | its peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for row in sizes:
            md.append(
                f"| {row['size_mib']} | {_stream_span(row['ours_mib_s'])} "
                f"| {_stream_span(row['baseline_mib_s'])} "
                f"| {_stream_span(row['ratio'], '.2f')} | {_stream_span(row['ours_peak_rss_mib'])} "
                f"| {_stream_span(row['baseline_peak_rss_mib'])} |"
            )
        md.append("")
    if chart_stream(stream, out / "bench-stream.png"):
        md += ["![stream](bench-stream.png)", ""]
    return md


def _stream_span(figure: dict[str, Any], fmt: str = ".1f") -> str:
    return f"{figure['median']:{fmt}} [{figure['low']:{fmt}}-{figure['high']:{fmt}}]"


def _plain_table(section: dict[str, Any]) -> list[str]:
    rows = ["| figure | value |", "|---|---|"]
    for key, value in section.items():
        if key in ("method", "at_200"):
            continue
        if isinstance(value, int | float | str | bool) or value is None:
            rows.append(f"| {key} | {value if not isinstance(value, float) else f'{value:.4g}'} |")
        elif isinstance(value, dict) and all(isinstance(v, int | float | str) for v in value.values()):
            rows.append(f"| {key} | {', '.join(f'{k} {v}' for k, v in value.items())} |")
    return rows


def _section_md(title: str, section: dict[str, Any]) -> list[str]:
    md = [f"## {title}", ""]
    if isinstance(section.get("method"), str):
        md += [f"**Method.** {section['method']}.", ""]
    md += [*_plain_table(section), ""]
    smaller = section.get("at_200")
    if isinstance(smaller, dict):
        md += [
            f"The same, for a burst of {smaller.get('uploads', 200)} uploads:"
            if "uploads" in smaller
            else "The same, for the burst of 200 uploads:",
            "",
            *_plain_table(smaller),
            "",
        ]
    return md


def _burst_md(results: dict[str, Any], out: Path) -> list[str]:
    md: list[str] = []
    for name, title in (("burst", "Burst of uploads"), ("webhook", "Webhook acknowledgement")):
        if isinstance(results.get(name), dict):
            md += _section_md(title, results[name])
    samples = _get(results, "webhook.ack_ms_samples")
    if isinstance(samples, list) and samples and all(isinstance(s, int | float) for s in samples):
        chart_histogram(samples, "Webhook ack latency", "ms", out / "bench-webhook-ack.png")
        md += ["![webhook ack latency](bench-webhook-ack.png)", ""]
    return md


def _cost_md(cost: dict[str, Any], out: Path) -> list[str]:
    chart_cost(cost, out / "bench-cost.png")
    md = [
        "## Cost",
        "",
        f"**Method.** AWS cost of {cost['videos']:,} videos ({cost['video']}) at us-east-1 list",
        "prices, from the",
        "template's memory sizes and schedule, the calls and durations measured above, and the",
        f"assumptions listed. DynamoDB counts from: {cost['dynamodb_counts_from']}.",
        "",
        f"AWS **${cost['aws_usd']:.4f}** (variable ${cost['aws_variable_usd']:.4f} + one month of fixed "
        f"${cost['aws_fixed_monthly_usd']:.4f}); provider **${cost['provider_usd']:,.2f}** "
        f"(AI/ML API's price: ${cost['provider_usd_aimlapi']:,.2f}); `cost.ratio` = **{cost['ratio']:.2e}**"
        + (
            " (per video, without the month's fixed costs: "
            f"`cost.ratio_variable` = {cost['ratio_variable']:.2e})."
            if "ratio_variable" in cost
            else "."
        ),
        "",
        "| item | quantity | unit | unit price USD | USD | note |",
        "|---|---|---|---|---|---|",
    ]
    for item in cost["lines"]:
        fixed = " (monthly)" if item["fixed_monthly"] else ""
        md.append(
            f"| {item['item']}{fixed} | {item['quantity']:,.4g} | {item['unit']} "
            f"| {item['unit_price_usd']:.4g} | "
            f"{item['usd']:.5f} | {item['note']} |"
        )
    md += ["", "![cost](bench-cost.png)", "", "Prices (source; `sure` false = not certain):", ""]
    for name, price in cost["prices"].items():
        md.append(
            f"- {name}: ${price['usd']:.6g} per {price['per']} ({price['source']}; sure: {price['sure']})"
        )
    md += [f"- all: {next(iter(cost['prices'].values()))['as_of']}", "", "Assumptions:", ""]
    for name, assumption in cost["assumptions"].items():
        md.append(f"- {name} = {assumption['value']}: {assumption['why']}")
    md += ["", "Not counted: " + "; ".join(cost["not_counted"]) + ".", ""]
    return md


def _image_check_md(check: dict[str, Any]) -> list[str]:
    md = [
        "## Image check: whole file against head only",
        "",
        f"**Method.** {check['method']}; S3 throughput assumed, not measured.",
        "",
        "| image | MiB | head ms | full ms | full / head | peak MiB head / full | GETs head / full "
        "| Lambda s | USD per upload |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in [*check["cases"], check["bomb"]]:
        md.append(
            f"| {case['image']} | {case['mib']} | {_span(case['head_ms'], '.3f')} "
            f"| {_span(case['full_ms'], '.2f')} | {_span(case['ratio'])} "
            f"| {case['head_peak_mib']:.2f} / {case['full_peak_mib']:.2f} "
            f"| {case['head_reads']} / {case['full_reads']} | {case['cost']['lambda_seconds']:.3f} "
            f"| {case['cost']['usd']:.2e} |"
        )
    prices = ", ".join(
        f"{route} {'unpublished' if usd is None else f'${usd:.2f}'}"
        for route, usd in check["paid_call_usd"].items()
    )
    md += [
        "",
        f"A paid call on an image the provider then fails (the stack's default options): {prices}. "
        f"The dearest check of an ordinary upload costs ${check['max_check_usd']:.2e}: one refused "
        f"call pays for **{check['cost_ratio']:,}** of them (`image_check.cost_ratio`).",
        "",
    ]
    return md


def write_report(results: dict[str, Any], out: Path) -> Path:
    seconds = ", ".join(f"{k} {v} s" for k, v in results["section_seconds"].items())
    md = [
        "# Benchmarks" + (" (quick)" if results.get("quick") else ""),
        "",
        f"- machine: {results['machine']}; at the end: {results.get('load_at_end', '?')}",
        f"- commit {results['commit']}, started {results['started_at']}, "
        f"took {results.get('total_seconds', '?')} s ({seconds})",
        "- figures are median [min-max]; every figure is measured next to its baseline in the same run",
        "",
        "## Targets",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {figure} | {value} | {target} | {_verdict(ok)} |"
        for figure, value, target, ok in targets(results)
    ]
    md.append("")
    for name, error in results.get("errors", {}).items():
        md += [f"## FAILED: {name}", "", "```", error.rstrip(), "```", ""]
    if isinstance(results.get("cold_start"), dict):
        md += _cold_start_md(results["cold_start"], out)
    if isinstance(results.get("stream"), dict):
        md += _stream_md(results["stream"], out)
    md += _burst_md(results, out)
    if isinstance(results.get("aws_calls"), dict):
        md += _section_md("DynamoDB calls per task", results["aws_calls"])
    if isinstance(results.get("poll_delay"), dict):
        md += _section_md("Polling routes: provider finished to SUCCEEDED", results["poll_delay"])
    if isinstance(results.get("image_check"), dict):
        md += _image_check_md(results["image_check"])
    if isinstance(results.get("cost"), dict):
        md += _cost_md(results["cost"], out)
    path = out / "bench.md"
    path.write_text("\n".join(md))
    return path
