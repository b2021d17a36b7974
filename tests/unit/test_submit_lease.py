"""The submit lease is a setting: the local stack's chaos run shortens it with the queue's
visibility timeout, so that a crashed try's message finds it expired, as deployed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from i2v.config import load_settings

REQUIRED = {"TABLE_NAME": "tasks", "BUCKET_NAME": "media", "TOPIC_ARN": "arn:aws:sns:us-east-1:1:t"}


def test_the_lease_defaults_to_three_minutes_above_the_submit_timeout() -> None:
    # Given no setting / When the settings load / Then the deployed default (Timeout 120 s)
    assert load_settings(REQUIRED).submit_lease_seconds == 180


def test_the_lease_can_be_shortened() -> None:
    assert load_settings({**REQUIRED, "SUBMIT_LEASE_SECONDS": "25"}).submit_lease_seconds == 25


def test_a_lease_of_zero_is_refused() -> None:
    with pytest.raises(ValidationError, match="SUBMIT_LEASE_SECONDS"):
        load_settings({**REQUIRED, "SUBMIT_LEASE_SECONDS": "0"})
