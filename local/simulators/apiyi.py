"""An APIYI-compatible HappyHorse image-to-video simulator on loopback.

APIYI serves the DashScope protocol behind its own base URL and path prefix
(../shared/PROVIDERS.md, section 2a): this is `DashScopeSimulator` with APIYI's prefix
`/wan/api/v1` and its documented durations (2..15 s), nothing copied. The task query at
`/wan/api/v1/tasks/{task_id}` is unverified: `task_path_prefix` changes it. Webhook support
is unknown, so none (a polling route).

Run it on its own: `python -m local.simulators.apiyi --help` (see docs/simulator.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from local.simulators.dashscope import DashScopeSimulator, cli_main

DEFAULT_PATH_PREFIX = "/wan/api/v1"
DURATION_MIN = 2  # APIYI's docs give 2..15 s (others say 3..15)

__all__ = ["DEFAULT_PATH_PREFIX", "ApiyiSimulator", "main"]


class ApiyiSimulator(DashScopeSimulator):
    """The APIYI route's simulator: the DashScope one under APIYI's prefix."""

    ROUTE = "apiyi"
    TITLE = "APIYI"
    DEFAULT_PATH_PREFIX = DEFAULT_PATH_PREFIX
    DURATION_MIN = DURATION_MIN


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(ApiyiSimulator, argv, env_prefix="APIYI", default_port=8092)


if __name__ == "__main__":
    raise SystemExit(main())
