"""What every route shares: settings from its prefix, input rules, signatures."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from i2v.domain import Options
from i2v.errors import InvalidImage, InvalidOptions, Unauthorized
from i2v.providers import ROUTES, UnknownRoute, route_entry
from i2v.providers.magnific import MagnificSettings
from i2v.providers.route import RouteConfigError, route_setting_pairs
from i2v.providers.signatures import verify_standard_webhook, webhook_key

KEY = b"k" * 32
WHSEC = "whsec_" + base64.b64encode(KEY).decode()


def test_every_registered_route_loads_with_its_documented_defaults() -> None:
    for name in ROUTES:
        entry = route_entry(name)
        settings = entry.load_settings({"DASHSCOPE_WORKSPACE_ID": "ws1"})
        assert entry.name == name
        assert settings.api_key_secret_name == f"happyhorse/{name}/api-key"
        assert bool(settings.webhook_secret_name) is entry.webhook_secret
        assert settings.model_id("1.0"), name


def test_an_unknown_route_names_the_ones_there_are() -> None:
    with pytest.raises(UnknownRoute, match="magnific, dashscope, apiyi, aimlapi, fal"):
        route_entry("nope")


def test_settings_come_from_the_prefix_and_the_stack_pairs_with_the_pairs_winning() -> None:
    environ = {
        "MAGNIFIC_PRICE_720P": "0.5",
        "MAGNIFIC_TIMEOUT_SECONDS": "3",
        "ROUTE_SETTINGS": "MAGNIFIC_PRICE_720P=0.2,MAGNIFIC_VIDEO_ALLOWED_HOSTS=.a.example,.b.example",
        "SECRET_PREFIX": "/team/",
        "FAL_PRICE_720P": "9",  # another route's
    }
    settings = route_entry("magnific").load_settings(environ)
    assert settings.price_720p == 0.2 and settings.timeout_seconds == 3
    assert settings.video_allowed_hosts == (".a.example", ".b.example")
    assert settings.api_key_secret_name == "/team/magnific/api-key"
    assert settings.webhook_secret_name == "/team/magnific/webhook-secret"


def test_pairs_split_on_commas_that_start_a_new_name() -> None:
    assert route_setting_pairs("A=1,B=x,y , C=") == [("A", "1"), ("B", "x,y"), ("C", "")]
    assert route_setting_pairs("") == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAGNIFIC_PRICE_720P", "-1"), ("MAGNIFIC_POLL_INTERVAL_SECONDS", "0"), ("MAGNIFIC_DURATION_MIN", "20")],
)
def test_a_setting_out_of_bounds_is_a_clear_deployment_error(variable: str, value: str) -> None:
    # (A route that redeclares a field with its own default drops pydantic's bounds: the
    # base checks them again for every route.)
    with pytest.raises(RouteConfigError, match="route magnific is misconfigured"):
        route_entry("magnific").load_settings({variable: value})


def test_options_a_route_cannot_take_are_all_named() -> None:
    rules = MagnificSettings(model_1_1="", resolutions=("720P",), duration_max=8, prompt_max_chars=10)
    with pytest.raises(InvalidOptions) as excinfo:
        rules.check_options(
            Options(prompt="x" * 11, resolution="1080P", duration=9, model="1.1"), route="magnific"
        )
    message = excinfo.value.message
    assert excinfo.value.code == "UNSUPPORTED_OPTION"
    for words in (
        "resolution 1080P (takes 720P)",
        "duration 9 s (takes 3..8 s)",
        "11 characters",
        "HappyHorse 1.1",
    ):
        assert words in message


def test_an_image_format_a_route_does_not_take_is_rejected_with_what_it_takes() -> None:
    rules = MagnificSettings(image_formats=("jpeg", "png"))
    with pytest.raises(InvalidImage) as excinfo:
        rules.check_image("webp", 800, 600, 1000)
    assert excinfo.value.code == "UNSUPPORTED_IMAGE_FORMAT" and "JPEG, PNG" in excinfo.value.message


def test_a_price_gives_the_estimate_and_an_unknown_price_none() -> None:
    priced = MagnificSettings(price_1080p=0.312)
    assert priced.estimate_cost_usd(Options(resolution="1080P", duration=5)) == 1.56
    assert priced.estimate_cost_usd(Options(resolution="720P")) is None  # Magnific's is unpublished


# --- Standard Webhooks, per-route key encoding ------------------------------------------------


def signed(key: bytes, body: bytes, version: str = "v1") -> dict[str, str]:
    now = datetime.fromtimestamp(time.time(), UTC)
    signature = Webhook(key).sign("msg_1", now, body.decode()).split(",", 1)[1]
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1a,AAAA {version},{signature}",
    }


@pytest.mark.parametrize(
    ("secret", "encoding", "key"),
    [
        (WHSEC, "standard", KEY),
        ("plain-dashboard-secret", "standard", b"plain-dashboard-secret"),
        (base64.b64encode(KEY).decode().rstrip("="), "base64", KEY),
        (WHSEC, "raw", WHSEC.encode()),
    ],
)
def test_each_key_encoding_gives_its_key(secret: str, encoding: str, key: bytes) -> None:
    assert webhook_key(secret, encoding) == key  # type: ignore[arg-type]
    body = b'{"task_id": "t"}'
    verify_standard_webhook(signed(key, body), body, secret, encoding=encoding)  # type: ignore[arg-type]


def test_any_numbered_version_may_match_and_asymmetric_entries_are_skipped() -> None:
    body = b"{}"
    verify_standard_webhook(signed(KEY, body, "v2"), body, WHSEC)
    with pytest.raises(Unauthorized):
        verify_standard_webhook(signed(b"x" * 32, body, "v1"), body, WHSEC)
    headers = signed(KEY, body)
    headers["webhook-signature"] = "v1a," + headers["webhook-signature"].split(",")[-1]
    with pytest.raises(Unauthorized):
        verify_standard_webhook(headers, body, WHSEC)
