"""The published OpenAPI description of the callback API (docs/openapi/callbacks.yaml) is
valid and is the handler's, and a property-based fuzz of the endpoint, through the callback
function's real entry on moto: never a 5xx, only documented answers, and no change at all
for a request that is not authentic.

The one designed 5xx, fal's 503 when its JWKS cannot be fetched, is out by construction:
the JWKS server is up for the whole run. tests/adversarial/test_callbacks_http.py runs the
same property through the local stack's HTTP gateway.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from i2v.providers import ROUTES, route_entry
from i2v.providers.fal import SIGNATURE_HEADER, WEBHOOK_HEADERS, FalWebhook
from i2v.providers.magnific import MagnificWebhook
from tests.adversarial.callback_rig import (
    SIGNED_ROUTES,
    Delivery,
    InProcessRig,
    SeededTask,
    invoke,
    running_rig,
)
from tests.adversarial.fuzz_requests import FUZZ_SETTINGS, check, drawn_requests, openapi

pytestmark = pytest.mark.timeout(120)

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
# What Standard Webhooks (Magnific's scheme) names its headers; the package has no constants.
STANDARD_WEBHOOK_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature"}
ROUTE_HEADERS = {"magnific": STANDARD_WEBHOOK_HEADERS, "fal": {*WEBHOOK_HEADERS, SIGNATURE_HEADER}}
ROUTE_BODIES = {"magnific": MagnificWebhook, "fal": FalWebhook}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi()


# -- the description --------------------------------------------------------------------


def test_the_description_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def handler_paths() -> set[str]:
    import callback

    return {
        re.sub(r"<(\w+)>", r"{\1}", route.path)
        for route in callback.webhooks()._dynamic_routes
        if route.method == "POST"
    }


def template_paths() -> set[str]:
    from local.template import load_template

    resources = load_template(TEMPLATE)["Resources"]
    return {
        event["Properties"]["Path"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi" and event["Properties"]["Method"] == "POST"
    }


def test_its_paths_are_the_handlers_and_the_http_apis_routes(document: dict[str, Any]) -> None:
    # Given the description's paths, with the signed routes' own paths read as the generic one
    generic = {re.sub(r"^/callbacks/[a-z]+/", "/callbacks/{route}/", p) for p in document["paths"]}
    # Then they are exactly the routes the HTTP API has and the handler serves
    assert generic == template_paths() == handler_paths()
    assert all(set(item) == {"post"} for item in document["paths"].values())


def test_each_route_that_takes_webhooks_has_its_own_path_with_the_headers_it_checks(
    document: dict[str, Any],
) -> None:
    paths = document["paths"]
    own = {name for name in ROUTES if f"/callbacks/{name}/{{task_id}}" in paths}
    # Then exactly the routes that take webhooks have their own path (the rest answer 401)
    assert own == {name for name in ROUTES if route_entry(name).webhooks} == set(SIGNED_ROUTES)
    for name in own:
        operation = paths[f"/callbacks/{name}/{{task_id}}"]["post"]
        headers = {p["name"] for p in operation["parameters"] if p.get("in") == "header"}
        assert headers == ROUTE_HEADERS[name]
        assert all(p["required"] for p in operation["parameters"] if p.get("in") == "header")
        assert {"200", "400", "401", "413"} <= set(operation["responses"])
    assert set(paths["/callbacks/{route}/{task_id}"]["post"]["responses"]) == {"401", "413"}
    assert "503" in paths["/callbacks/fal/{task_id}"]["post"]["responses"]


def test_its_body_schemas_are_the_routes_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for route, model in ROUTE_BODIES.items():
        described = schemas[model.__name__]
        generated = model.model_json_schema()
        # The same required fields and the same known ones; an unknown field is refused.
        assert set(described["required"]) == set(generated["required"]), route
        assert set(described["properties"]) == set(generated["properties"]), route
        assert described["additionalProperties"] is False and model.model_config.get("extra") == "forbid"
    statuses = schemas["FalWebhook"]["properties"]["status"]["enum"]
    assert statuses == list(FalWebhook.model_fields["status"].annotation.__args__)  # type: ignore[union-attr]


# -- the fuzz ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig() -> Iterator[InProcessRig]:
    with running_rig() as running:
        yield running


@pytest.fixture(scope="module")
def pool(rig: InProcessRig) -> dict[str, list[SeededTask]]:
    return {route: [rig.seed(route) for _ in range(3)] for route in SIGNED_ROUTES}


def post_in_process(delivery: Delivery) -> tuple[int, Any]:
    answer = invoke(delivery.event())
    return answer["statusCode"], json.loads(answer["body"])


def test_the_endpoint_never_fails_and_changes_nothing_for_requests_that_are_not_authentic(
    rig: InProcessRig, pool: dict[str, list[SeededTask]], document: dict[str, Any]
) -> None:
    seen: Counter[int] = Counter()
    authentic: Counter[bool] = Counter()
    state = [rig.snapshot()]

    @settings(FUZZ_SETTINGS, max_examples=150)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        drawn = data.draw(drawn_requests(rig, pool))
        status, state[0] = check(rig, document, post_in_process, drawn, state[0])
        seen[status] += 1
        authentic[drawn.authentic] += 1

    fuzz()
    # The run reached every kind of answer, and authentic requests as well as forged ones
    assert {200, 400, 401} <= set(seen), seen
    assert authentic[True] >= 10 and authentic[False] >= 100, authentic
