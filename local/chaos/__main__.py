"""`make chaos` (python -m local.chaos): a seeded fault-injection run through the local stack,
reported in reports/chaos.json, reports/chaos.md and reports/chaos.png. Exits 1 when a
target is missed (lost, duplicate videos, unnotified tasks, unexplained duplicate
submissions)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from local.chaos import report
from local.chaos.plan import ChaosPlan
from local.chaos.run import run

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    parser.add_argument("--uploads", type=int, default=300, help="uploads in the run (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument(
        "--spread", type=float, default=None, help="seconds the uploads are spread over (default: 0.8 s each)"
    )
    parser.add_argument("--out", type=Path, default=REPOSITORY_ROOT / "reports", help="report folder")
    parser.add_argument("--keep", type=Path, default=None, help="keep the logs (functions, faults) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    plan = ChaosPlan(
        seed=args.seed,
        uploads=args.uploads,
        spread_seconds=args.spread if args.spread is not None else 0.8 * args.uploads,
    )
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        folder = args.keep or Path(scratch)
        record = run(plan, folder, progress=lambda line: print(line, flush=True))
    found = report.write(record, args.out)
    print((args.out / "chaos.md").read_text(encoding="utf-8"))
    return 0 if all(found["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
