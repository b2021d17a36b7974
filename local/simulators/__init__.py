"""Loopback simulators of the HappyHorse provider routes, one module per route.

Each speaks its route's wire format, so the pipeline (and a user's own integration)
runs end to end offline. Run one on its own, e.g. `python -m local.simulators.magnific`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.simulators.core import Simulator


def simulator_class(route: str) -> type[Simulator[Any]]:
    """Route `route`'s simulator: the class in `local/simulators/<route>.py` whose ROUTE is
    `route` (a route's simulator is one module, no list to keep in step)."""
    from local.simulators.core import Simulator

    try:
        module = importlib.import_module(f"local.simulators.{route}")
    except ModuleNotFoundError as exc:
        raise LookupError(f"no simulator for route {route!r} (local/simulators/{route}.py)") from exc
    for _, member in inspect.getmembers(module, inspect.isclass):
        if issubclass(member, Simulator) and getattr(member, "ROUTE", None) == route:
            return member
    raise LookupError(f"local/simulators/{route}.py has no Simulator with ROUTE = {route!r}")
