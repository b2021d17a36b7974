"""The registry of HappyHorse routes: adding one is a module, its simulator and a line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from i2v.errors import PipelineError
from i2v.providers.base import Credentials, Provider

if TYPE_CHECKING:
    import httpx

    from i2v.config import Settings

# The HTTP client is made on first use: a function that only verifies webhooks never pays
# for importing httpx.
HttpClient = Callable[[], "httpx.Client"]


def _magnific(settings: Settings, http: HttpClient, credentials: Credentials) -> Provider:
    from i2v.providers.magnific import MagnificProvider

    return MagnificProvider(
        http,
        credentials=credentials,
        base_url=settings.provider_base_url,
        api_key_header=settings.provider_api_key_header,
        model=settings.provider_model,
    )


REGISTRY: dict[str, Callable[[Settings, HttpClient, Credentials], Provider]] = {
    "magnific": _magnific,
}


class UnknownRoute(PipelineError):
    """A task or a setting names a route this deployment does not have."""

    code = "UNKNOWN_ROUTE"


def create_provider(name: str, settings: Settings, http: HttpClient, credentials: Credentials) -> Provider:
    """The adapter of route `name`: the stack's route for new tasks, a task's own for the rest."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise UnknownRoute(f"unknown provider route {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return factory(settings, http, credentials)
