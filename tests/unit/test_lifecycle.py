"""The lifecycle table: which state may follow which, checked as a whole."""

from __future__ import annotations

import pytest

from i2v.domain import TERMINAL_STATES, TaskStatus
from i2v.tasks.lifecycle import ENTERED_FROM, OPEN_STATES, entered_from, may_move

S = TaskStatus


def test_every_state_has_a_row() -> None:
    assert set(ENTERED_FROM) == set(TaskStatus)


def test_terminal_states_lead_nowhere() -> None:
    for sources in ENTERED_FROM.values():
        assert not sources & TERMINAL_STATES
    assert {S.RECEIVED, S.DEFERRED, S.UNCONFIRMED, S.SUBMITTED, S.RUNNING, S.FINALIZING} == OPEN_STATES


def test_received_is_entered_again_only_by_a_deferred_task() -> None:
    assert entered_from(S.RECEIVED) == {S.DEFERRED}
    assert entered_from(S.DEFERRED) == {S.RECEIVED}


def test_every_state_is_reachable_from_received() -> None:
    reached = {S.RECEIVED}
    while True:
        more = {to for to, sources in ENTERED_FROM.items() if sources & reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(TaskStatus)


@pytest.mark.parametrize(
    ("current", "to", "allowed"),
    [
        (S.RECEIVED, S.SUBMITTED, True),
        (S.RECEIVED, S.DEFERRED, True),  # over the day's budget, before any paid call
        (S.DEFERRED, S.RECEIVED, True),  # the next day: submitted again
        (S.DEFERRED, S.SUBMITTED, False),  # only through RECEIVED, with a fresh claim
        (S.SUBMITTED, S.DEFERRED, False),  # a task the provider has is never deferred
        (S.DEFERRED, S.REJECTED, False),
        (S.RUNNING, S.SUBMITTED, False),  # a late submit step does not take a task back
        (S.RECEIVED, S.RUNNING, True),  # a fast provider reports before its id is recorded
        (S.RUNNING, S.RUNNING, False),  # a duplicate progress webhook writes nothing
        (S.RUNNING, S.FINALIZING, True),
        (S.FINALIZING, S.FINALIZING, False),  # a duplicate completion queues no second order
        (S.FINALIZING, S.SUCCEEDED, True),
        (S.RUNNING, S.SUCCEEDED, False),  # success only once the video is stored
        (S.RECEIVED, S.REJECTED, True),
        (S.SUBMITTED, S.REJECTED, False),  # nothing is rejected once the provider has it
        (S.RECEIVED, S.FAILED, True),
        (S.RUNNING, S.FAILED, False),  # a provider failure goes through FINALIZING
        (S.FINALIZING, S.TIMED_OUT, True),
        (S.SUCCEEDED, S.FAILED, False),
        (S.FAILED, S.SUCCEEDED, False),
    ],
)
def test_moves(current: TaskStatus, to: TaskStatus, allowed: bool) -> None:
    assert may_move(current, to) is allowed
