"""The command line every simulator shares: its options, and serving until a stop signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from local.simulators.core.simulator import Simulator


def cli_parser(
    route: str, description: str, *, default_port: int, default_poll_rate: float | None = None
) -> argparse.ArgumentParser:
    """A parser with the options every simulator has; the route adds its credentials. A
    polling route gives `default_poll_rate` (0: no limit) to get `--poll-rate`."""
    parser = argparse.ArgumentParser(prog=f"python -m local.simulators.{route}", description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=default_port, help="port, 0 for any (default: %(default)s)"
    )
    parser.add_argument(
        "--render-max-long-side",
        type=int,
        default=None,
        help="cap the video's long side in pixels for faster renders",
    )
    parser.add_argument(
        "--progress-delay",
        type=float,
        default=0.2,
        help="seconds spent in each of CREATED and IN_PROGRESS before rendering (default: %(default)s)",
    )
    parser.add_argument(
        "--render-workers",
        type=int,
        default=2,
        help="videos rendered at the same time (default: %(default)s)",
    )
    parser.add_argument(
        "--public-url", default=None, help="base URL put in video links (default: the listening address)"
    )
    if default_poll_rate is not None:
        parser.add_argument(
            "--poll-rate",
            type=float,
            default=default_poll_rate,
            help="status reads per second before 429, 0 for no limit (default: %(default)s)",
        )
    parser.add_argument("--log-level", default="INFO", help="(default: %(default)s)")
    return parser


def env_option(parser: argparse.ArgumentParser, flag: str, *, env: str, help: str) -> None:
    """Add a credential option that defaults to environment variable `env`."""
    parser.add_argument(flag, default=os.environ.get(env), help=f"{help} (or env {env})")


def common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Simulator` keyword arguments from the options `cli_parser` added."""
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "render_max_long_side": args.render_max_long_side,
        "progress_delay": args.progress_delay,
        "render_workers": args.render_workers,
        "public_url": args.public_url,
    }
    if "poll_rate" in vars(args):
        options["poll_rate_per_second"] = args.poll_rate or None
    return options


def serve_until_stopped(build: Callable[[], Simulator[Any]], log_level: str) -> int:
    """Configure logging, start the simulator `build` returns, serve until SIGINT or SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO, including webhook tokens and presigned queries.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    stop_requested = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stop_requested.set())
    simulator = build()
    with simulator:
        print(f"{simulator.TITLE} simulator listening on {simulator.url} (Ctrl-C stops)", flush=True)
        stop_requested.wait()
    return 0
