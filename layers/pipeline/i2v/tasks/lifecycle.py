"""The task lifecycle in one table: each state and the states it may be entered from.

    DEFERRED
     ▲  │
     │  ▼
    RECEIVED ──▶ SUBMITTED ──▶ RUNNING ──▶ FINALIZING ──▶ SUCCEEDED
       │  │                         ▲         │
       │  └──▶ UNCONFIRMED ─────────┘         ▼
       ▼                                FAILED / TIMED_OUT
    REJECTED / FAILED

UNCONFIRMED is a submission that was sent and never answered: the provider may have
made the task. Nothing submits it again; its webhook (which names our task) moves it on,
or the reconciler fails it after the hold with PROVIDER_OUTCOME_UNKNOWN.

DEFERRED is a task over the day's budget (i2v/budget.py), before any paid call: it
waits for the next UTC day, then the reconciler sends it back to the uploads queue and
the submit step takes it to RECEIVED again and submits it.

Every write that changes a task's status takes its condition from here, so a
duplicate, late or out-of-order event fails the condition and changes nothing.
RECEIVED is created (a conditional PutItem), and entered again only by a deferred task.

FINALIZING means the outcome is known and is being recorded: the video downloaded, or
the provider's failure or the deadline written down. Only the finalize order that
holds the task (its `owner`) may end it from there; the reconciler may hand a stale
FINALIZING task to a new order (TaskStore.hand_over), which is not a transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from i2v.domain import TERMINAL_STATES, TaskStatus

_DEFERRED, _RECEIVED, _UNCONFIRMED, _SUBMITTED, _RUNNING, _FINALIZING = (
    TaskStatus.DEFERRED,
    TaskStatus.RECEIVED,
    TaskStatus.UNCONFIRMED,
    TaskStatus.SUBMITTED,
    TaskStatus.RUNNING,
    TaskStatus.FINALIZING,
)

ENTERED_FROM: Mapping[TaskStatus, frozenset[TaskStatus]] = MappingProxyType(
    {
        TaskStatus.RECEIVED: frozenset({_DEFERRED}),
        TaskStatus.DEFERRED: frozenset({_RECEIVED}),
        TaskStatus.UNCONFIRMED: frozenset({_RECEIVED}),
        TaskStatus.SUBMITTED: frozenset({_RECEIVED}),
        # A fast provider may report before the submit step has recorded its task id, and
        # the webhook of an unconfirmed submission says the provider did take it.
        TaskStatus.RUNNING: frozenset({_RECEIVED, _UNCONFIRMED, _SUBMITTED}),
        TaskStatus.FINALIZING: frozenset({_RECEIVED, _UNCONFIRMED, _SUBMITTED, _RUNNING}),
        TaskStatus.SUCCEEDED: frozenset({_FINALIZING}),
        # Refused by the provider at submission, or failed by it (through FINALIZING).
        TaskStatus.FAILED: frozenset({_RECEIVED, _FINALIZING}),
        TaskStatus.REJECTED: frozenset({_RECEIVED}),
        TaskStatus.TIMED_OUT: frozenset({_FINALIZING}),
    }
)

OPEN_STATES = frozenset(ENTERED_FROM) - TERMINAL_STATES


def entered_from(status: TaskStatus) -> frozenset[TaskStatus]:
    """The states a task may be in for `status` to be written."""
    return ENTERED_FROM[status]


def may_move(current: TaskStatus, to: TaskStatus) -> bool:
    return current in ENTERED_FROM[to]
