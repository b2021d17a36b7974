"""`make stack`: the local stack, kept running until Ctrl-C, with a file saying where it is.

    python -m local.stack_main [--routes magnific,fal] [--output out/local-stack.json]

The file (i2v_cli/stack.py reads it) holds the emulator's endpoint, the region, the fake
credentials and the template's Outputs; `i2v --local ...` finds the stack through it.
It is removed when the stack stops.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from i2v_cli.stack import DEFAULT_LOCAL_FILE, StackInfo, write_local_file
from local.stack import FAKE_CREDENTIALS, REPOSITORY_ROOT, LocalStack

# The reconciler's schedule, shortened as `make demo` does (the deployed one is 5 minutes).
RECONCILE_INTERVAL_SECONDS = 5.0
TRY_COMMANDS = (
    "i2v --local submit IMAGE --prompt 'the horse gallops' --wait",
    "i2v --local list --since 1h",
    "i2v --local status incoming/IMAGE_NAME",
    "i2v --local tail",
    "i2v --local cost --since 1d",
    "i2v --local redrive --dry-run",
)


def write_stack_file(stack: LocalStack, path: Path) -> StackInfo:
    """Where the running `stack` is, for `i2v --local` (and boto3, the AWS CLI)."""
    info = StackInfo(
        name=stack.stack_name,
        region=stack.region,
        outputs=stack.outputs(),
        endpoint_url=stack.moto.url,
        credentials={name.lower(): value for name, value in FAKE_CREDENTIALS.items()},
    )
    write_local_file(
        path,
        info,
        routes=list(stack.routes),
        simulators={name: simulator.url for name, simulator in stack.simulators.items()},
        pid=os.getpid(),
    )
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.stack_main", description="Run the local stack until Ctrl-C."
    )
    parser.add_argument("--routes", default="magnific", help="comma-separated, primary first")
    parser.add_argument("--output", type=Path, default=REPOSITORY_ROOT / DEFAULT_LOCAL_FILE)
    args = parser.parse_args(argv)
    output: Path = args.output
    running = _running_pid(output)
    if running is not None:
        print(f"a local stack is already running (pid {running}, {output}): stop it first", file=sys.stderr)
        return 1
    log_path = output.parent / "local-stack.log"
    output.parent.mkdir(parents=True, exist_ok=True)
    # SIGINT too: a shell that starts this in the background would have it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    with open(log_path, "ab") as function_log:
        logging.basicConfig(
            level=logging.INFO,
            handlers=[logging.FileHandler(log_path)],
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            force=True,
        )
        # httpx logs whole URLs at INFO, and callback URLs carry tokens.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        stack = LocalStack(
            routes=args.routes.split(","),
            reconcile_interval_seconds=RECONCILE_INTERVAL_SECONDS,
            function_log=function_log,
        )
        try:
            with stack:
                write_stack_file(stack, output)
                _announce(stack, output, log_path)
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping the local stack", file=sys.stderr)
        finally:
            if _running_pid(output) == os.getpid():
                output.unlink()
    return 0


def _running_pid(path: Path) -> int | None:
    """The pid in a stack file whose process is alive (a file left by a crash is not)."""
    try:
        pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def _announce(stack: LocalStack, output: Path, log_path: Path) -> None:
    lines = [
        f"local stack up: AWS (moto) {stack.moto.url}, region {stack.region}",
        f"  routes {', '.join(stack.routes)}",
        f"  bucket {stack.bucket}, table {stack.table}",
        f"  where to find it: {output}    functions' logs: {log_path}",
        "try, in another shell (.venv/bin/i2v, or `uv run i2v`):",
        *(f"  {command}" for command in TRY_COMMANDS),
        "Ctrl-C stops it.",
    ]
    print("\n".join(lines), flush=True)


def _interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
