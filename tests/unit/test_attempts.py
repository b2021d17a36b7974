"""Provider attempts: how each one ends, and which a provider may have billed for nothing."""

from __future__ import annotations

from typing import Any

import pytest

from i2v.attempts import AttemptOutcome, billed_without_video, refund_rows, with_end
from i2v.domain import Task

ACCEPTED = {
    "route": "fal",
    "provider_task_id": "req-1",
    "started_at": 100.0,
    "outcome": "accepted",
    "estimated_charge_usd": 1.4,
}
UNAVAILABLE = {
    "route": "dashscope",
    "started_at": 50.0,
    "ended_at": 51.0,
    "outcome": "unavailable",
    "error": {"code": "PROVIDER_UNAVAILABLE", "message": "HTTP 503"},
    "estimated_charge_usd": 0,
}
UNCONFIRMED = {
    "route": "fal",
    "started_at": 100.0,
    "ended_at": 130.0,
    "outcome": "unconfirmed",
    "error": {"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "read timed out"},
    "estimated_charge_usd": 1.4,
}


def task(status: str, attempts: list[dict[str, Any]], **fields: Any) -> Task:
    return Task.model_validate(
        {
            "task_id": "t-1",
            "status": status,
            "source": {"bucket": "uploads", "key": "incoming/cat.png"},
            "options": {"resolution": "720P", "duration": 10},
            "provider": {"name": "fal", "task_id": fields.pop("provider_task_id", "req-1")},
            "received_at": 40.0,
            "updated_at": 400.0,
            "finished_at": 400.0 if status not in ("RUNNING", "SUBMITTED", "UNCONFIRMED") else None,
            "attempts": attempts,
            **fields,
        }
    )


def test_a_succeeded_task_was_billed_for_its_video_only() -> None:
    # Given a retry after an outage that brought the video
    done = task(
        "SUCCEEDED", [UNAVAILABLE, ACCEPTED], video={"bucket": "b", "key": "v", "size": 1, "sha256": "x"}
    )

    # Then the accepted attempt ends as the task did, and nothing is to be refunded
    ends = with_end(done)
    assert [a.outcome for a in ends] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCEEDED]
    assert ends[1].ended_at == 400.0
    assert billed_without_video(done) == []


@pytest.mark.parametrize(
    ("status", "cancelled_at", "outcome"),
    [("FAILED", None, "failed"), ("TIMED_OUT", None, "timed_out"), ("TIMED_OUT", 390.0, "cancelled")],
)
def test_an_accepted_attempt_without_a_video_is_refund_evidence(
    status: str, cancelled_at: float | None, outcome: str
) -> None:
    # Given a task the provider took and that ended without a video
    ended = task(
        status,
        [UNAVAILABLE, ACCEPTED],
        error={"code": "PROVIDER_FAILED", "message": "NSFW"},
        cancelled_at=cancelled_at,
    )

    # Then only the accepted attempt is listed, with what support asks for
    assert refund_rows(ended) == [
        {
            "provider": "fal",
            "provider_task_id": "req-1",
            "task_id": "t-1",
            "started_at": "1970-01-01T00:01:40.000Z",
            "ended_at": "1970-01-01T00:06:40.000Z",
            "outcome": outcome,
            "error_code": "PROVIDER_FAILED",
            "error_message": "NSFW",
            "estimated_charge_usd": 1.4,
            "resolution": "720P",
            "duration_seconds": 10,
            "model": None,
            "source_key": "incoming/cat.png",
            "source_uri": "s3://uploads/incoming/cat.png",
        }
    ]


def test_an_unanswered_submission_may_have_been_billed() -> None:
    # Given a submission that got no answer and was failed after the hold
    failed = task(
        "FAILED",
        [UNCONFIRMED],
        provider_task_id=None,
        error={"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "no webhook"},
    )

    # Then it is listed, without a provider task id (support searches by time and image)
    [row] = refund_rows(failed)
    assert (row["provider_task_id"], row["outcome"], row["error_code"]) == (
        None,
        "failed",
        "PROVIDER_OUTCOME_UNKNOWN",
    )


def test_an_unconfirmed_attempt_takes_the_id_its_webhook_named() -> None:
    running = task("RUNNING", [UNCONFIRMED], provider_task_id="req-late")
    [attempt] = with_end(running)
    assert (attempt.provider_task_id, attempt.outcome) == ("req-late", AttemptOutcome.UNCONFIRMED)


def test_open_tasks_and_refusals_are_not_refund_evidence() -> None:
    # A task still running may bring its video; a refusal or an outage was not a task made
    assert billed_without_video(task("RUNNING", [ACCEPTED])) == []
    refused = {
        "route": "fal",
        "started_at": 100.0,
        "ended_at": 101.0,
        "outcome": "refused",
        "error": {"code": "PROVIDER_REJECTED", "message": "bad image"},
        "estimated_charge_usd": 0,
    }
    assert billed_without_video(task("FAILED", [UNAVAILABLE, refused], provider_task_id=None)) == []


def test_a_refund_row_has_exactly_the_published_columns_in_order() -> None:
    from i2v.attempts import REFUND_COLUMNS

    failed = task(
        "FAILED",
        [UNCONFIRMED],
        provider_task_id=None,
        error={"code": "PROVIDER_OUTCOME_UNKNOWN", "message": "no webhook"},
    )
    [row] = refund_rows(failed)
    assert tuple(row) == REFUND_COLUMNS
