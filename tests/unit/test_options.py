"""Option resolution: defaults < metadata < sidecar, with every reason on failure."""

from __future__ import annotations

import json

import pytest

from i2v.domain import Options
from i2v.errors import InvalidOptions
from i2v.options import resolve_options

DEFAULTS = Options(prompt="default", resolution="1080P", duration=5)


def no_sidecar(key: str) -> bytes:
    raise AssertionError(f"sidecar {key} should not be read")


def test_defaults_apply_when_nothing_is_given() -> None:
    assert resolve_options(DEFAULTS, {}, no_sidecar) == DEFAULTS


def test_metadata_is_case_insensitive_and_percent_decoded() -> None:
    options = resolve_options(
        DEFAULTS, {"Prompt": "caf%C3%A9%20au%20lait", "RESOLUTION": "720p", "seed": "0"}, no_sidecar
    )
    assert options == Options(prompt="café au lait", resolution="720P", duration=5, seed=0)


def test_a_prompt_with_a_literal_percent_sign_survives() -> None:
    assert resolve_options(DEFAULTS, {"prompt": "100% speed"}, no_sidecar).prompt == "100% speed"


def test_prompt_length_counts_characters_not_bytes() -> None:
    named = {"options": "incoming/o.json"}
    assert (
        resolve_options(DEFAULTS, named, lambda _: json.dumps({"prompt": "é" * 5000}).encode()).prompt
        == "é" * 5000
    )
    with pytest.raises(InvalidOptions, match="prompt"):
        resolve_options(DEFAULTS, named, lambda _: json.dumps({"prompt": "é" * 5001}).encode())


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"colour": "red"}', "unknown fields"),
        (b'{"duration": 1}', "duration"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
    ],
)
def test_bad_sidecars_are_explained(sidecar: bytes, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        resolve_options(DEFAULTS, {"options": "incoming/o.json"}, lambda _: sidecar)


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidOptions) as raised:
        resolve_options(DEFAULTS, {"duration": "99", "resolution": "8K"}, no_sidecar)
    assert "duration" in raised.value.message and "resolution" in raised.value.message
