"""The registry of HappyHorse routes: adding one is its module, its simulator and a line here.

Each module defines `ROUTE` (i2v/providers/route.py). It is imported when a task on that
route is first seen, so a function loads only the routes it serves.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from i2v.errors import PipelineError

if TYPE_CHECKING:
    from i2v.providers.route import Route

ROUTES: Mapping[str, str] = {
    "magnific": "i2v.providers.magnific",
    "dashscope": "i2v.providers.dashscope",
    "apiyi": "i2v.providers.apiyi",
    "aimlapi": "i2v.providers.aimlapi",
    "fal": "i2v.providers.fal",
}


class UnknownRoute(PipelineError):
    """A task, an upload or a setting names a route this deployment does not have."""

    code = "UNKNOWN_ROUTE"


def known_routes() -> str:
    return ", ".join(ROUTES)


@cache
def route_entry(name: str) -> Route:
    """Route `name`'s registry entry; raises UnknownRoute listing the routes there are."""
    try:
        module = ROUTES[name]
    except (KeyError, TypeError):
        raise UnknownRoute(f"unknown provider route {name!r}; the routes are: {known_routes()}") from None
    entry: Route = importlib.import_module(module).ROUTE
    return entry
