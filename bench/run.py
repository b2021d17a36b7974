"""`make bench`: every benchmark section, one JSON, one readable report with charts.

Each section is a module in bench/ with `run(quick: bool) -> dict` (a section that needs
earlier results takes them as a second argument, `results`). A section returns its own
top-level keys (`{"burst": ..., "webhook": ...}`), which are merged; a result that does not
carry its own section's name is filed under it (`stream` returns its figures bare). A section
whose module is missing or raises fails the run (exit 1) after the others ran and the report
was written with the error in it.

    .venv/bin/python bench/run.py [--quick] [--sections cold_start,cost] [--out reports]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from measure import ROOT, load, machine

from local.provenance import git_commit

# Section name -> module in bench/. Order matters: cost reads what ran before it.
SECTIONS = {
    "cold_start": "cold_start_floor",
    "stream": "video_stream",
    "burst": "burst",
    "aws_calls": "aws_calls",
    "poll_delay": "poll_delay",
    "image_check": "image_check",
    "cost": "cost",
}


def run_section(name: str, quick: bool, results: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(SECTIONS[name])
    section_run = getattr(module, "run", None)
    if section_run is None:
        raise RuntimeError(f"bench/{SECTIONS[name]}.py has no run(quick) function")
    takes_results = len(inspect.signature(section_run).parameters) >= 2
    returned = section_run(quick, results) if takes_results else section_run(quick)
    if not isinstance(returned, dict):
        raise TypeError(f"section {name} returned {type(returned).__name__}, not a dict")
    return returned if name in returned else {name: returned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few runs (what `make test` runs)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="where bench.json and bench.md go")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    sections = [s for s in SECTIONS if s in wanted]

    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_commit(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sections": sections,
        "section_seconds": {},
        "errors": {},
    }
    print(results["machine"], flush=True)
    for name in sections:
        began = time.perf_counter()
        print(f"== {name} ...", flush=True)
        try:
            returned = run_section(name, args.quick, results)
        except Exception as error:
            results["errors"][name] = "".join(traceback.format_exception(error))
            print(f"!! section {name} failed:\n{results['errors'][name]}", file=sys.stderr, flush=True)
        else:
            clashes = sorted(set(returned) & set(results))
            if clashes:
                results["errors"][name] = f"returned keys already taken: {clashes}"
            else:
                results.update(returned)
        results["section_seconds"][name] = round(time.perf_counter() - began, 1)
        print(f"   {name}: {results['section_seconds'][name]} s", flush=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["load_at_end"] = load()

    from report import write_report

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_report(results, args.out)
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} in {results['total_seconds']} s")
    if results["errors"]:
        print(f"FAILED sections: {', '.join(results['errors'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
