"""Polling routes: each open task's own chain of delayed status checks."""

from __future__ import annotations

from typing import Any

import pytest

from i2v.domain import ProviderRef, SourceObject, Task, TaskStatus
from i2v.errors import ProviderUnavailable
from i2v.providers.base import ProviderState, ProviderUpdate
from i2v.tasks.store import TaskStore
from i2v.usecases.poll import Pacer, Poller, PollOrder, PollOutcome
from i2v.usecases.progress import FinalizeOrder, Progress
from tests.support.fakes import Clock, FakeProvider, fake_route_settings


@pytest.fixture
def dashscope() -> FakeProvider:
    return FakeProvider(name="dashscope", supports_webhooks=False)


@pytest.fixture
def orders() -> list[FinalizeOrder]:
    return []


@pytest.fixture
def scheduled() -> list[tuple[PollOrder, int]]:
    return []


@pytest.fixture
def poller(
    store: TaskStore,
    dashscope: FakeProvider,
    orders: list[FinalizeOrder],
    scheduled: list[tuple[PollOrder, int]],
    clock: Clock,
) -> Poller:
    settings = fake_route_settings(first_poll_seconds=45, poll_interval_seconds=15, poll_rate_per_second=20)
    return Poller(
        providers={"dashscope": dashscope}.__getitem__,
        route_settings=lambda route: settings,
        progress=Progress(store=store, enqueue=orders.append, clock=clock),
        schedule=lambda order, delay: scheduled.append((order, delay)),
        pacer=Pacer(concurrency=2, clock=clock, sleep=clock.advance),
        task_deadline_seconds=3600,
    )


@pytest.fixture
def order(store: TaskStore, clock: Clock) -> PollOrder:
    task = Task(
        task_id="t-1",
        status=TaskStatus.RECEIVED,
        received_at=clock(),
        updated_at=clock(),
        source=SourceObject(bucket="media", key="incoming/a.png", size=10),
        provider=ProviderRef(name="dashscope"),
        owner="upload-msg",
    )
    assert store.create(task, lease_until=clock() + 60).applied
    assert store.mark_submitted("t-1", provider_task_id="ds-1", now=clock()) is not None
    return PollOrder(task_id="t-1", route="dashscope", provider_task_id="ds-1", submitted_at=clock())


def answer(dashscope: FakeProvider, state: ProviderState, **fields: Any) -> None:
    dashscope.statuses["ds-1"] = ProviderUpdate(
        provider_task_id="ds-1", state=state, raw_status=state.value, **fields
    )


def test_the_first_check_waits_for_the_expected_generation_time(
    poller: Poller, order: PollOrder, scheduled: list[tuple[PollOrder, int]]
) -> None:
    poller.first(order)
    assert scheduled == [(order, 45)]


def test_a_pending_task_is_checked_again_after_the_interval_writing_nothing(
    poller: Poller,
    order: PollOrder,
    dashscope: FakeProvider,
    store: TaskStore,
    scheduled: list[tuple[PollOrder, int]],
    aws: Any,
) -> None:
    answer(dashscope, ProviderState.PENDING)
    calls: list[str] = []  # the store's client is this one
    aws.dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))

    assert poller(order) is PollOutcome.PENDING
    [(again, delay)] = scheduled
    assert delay == 15 and again.polls == 1
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.SUBMITTED
    assert calls.count("UpdateItem") == 0 and calls.count("GetItem") == 1  # the GetItem is this test's


def test_running_is_recorded_once_then_polls_go_on(
    poller: Poller,
    order: PollOrder,
    dashscope: FakeProvider,
    store: TaskStore,
    scheduled: list[tuple[PollOrder, int]],
) -> None:
    answer(dashscope, ProviderState.RUNNING)
    assert poller(order) is PollOutcome.RUNNING
    task = store.get("t-1")
    assert task is not None and task.status is TaskStatus.RUNNING
    ((next_order, _),) = scheduled
    assert next_order.running
    # The next RUNNING answer writes nothing and schedules the next check
    assert poller(next_order) is PollOutcome.PENDING
    assert len(scheduled) == 2


def test_success_goes_to_the_finalize_queue_with_the_video_and_the_chain_ends(
    poller: Poller,
    order: PollOrder,
    dashscope: FakeProvider,
    store: TaskStore,
    orders: list[FinalizeOrder],
    scheduled: list[tuple[PollOrder, int]],
    clock: Clock,
) -> None:
    answer(dashscope, ProviderState.SUCCEEDED, video_url="https://oss.example/v.mp4")
    assert poller(order) is PollOutcome.FINISHED
    [finalize] = orders
    assert finalize.video_url == "https://oss.example/v.mp4"
    assert finalize.task.status is TaskStatus.FINALIZING and finalize.task.completed_via == "poll"
    assert finalize.task.result_expires_at == pytest.approx(clock() + 24 * 3600)
    assert scheduled == []
    # A duplicate order for the same task finds it finished: no second finalize order
    assert poller(order) is PollOutcome.FINISHED
    assert len(orders) == 1


def test_an_id_the_provider_no_longer_knows_fails_the_task_with_that_reason(
    poller: Poller, order: PollOrder, dashscope: FakeProvider, orders: list[FinalizeOrder]
) -> None:
    answer(dashscope, ProviderState.GONE)
    assert poller(order) is PollOutcome.FINISHED
    [finalize] = orders
    assert finalize.task.outcome is TaskStatus.FAILED
    assert finalize.task.error is not None and finalize.task.error.code == "PROVIDER_TASK_GONE"


def test_an_outage_comes_back_as_retry_later_for_the_queue(
    poller: Poller, order: PollOrder, dashscope: FakeProvider
) -> None:
    def down(provider_task_id: str, *, model: str | None = None) -> ProviderUpdate:
        raise ProviderUnavailable("429", retry_after=3)

    dashscope.status = down  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable):
        poller(order)


def test_polls_stop_past_the_deadline_for_the_reconciler_to_time_the_task_out(
    poller: Poller,
    order: PollOrder,
    dashscope: FakeProvider,
    scheduled: list[tuple[PollOrder, int]],
    clock: Clock,
) -> None:
    answer(dashscope, ProviderState.PENDING)
    clock.advance(3601)
    assert poller(order) is PollOutcome.STOPPED
    assert scheduled == []


def test_the_pacer_keeps_all_pollers_together_under_the_routes_rate() -> None:
    # Given 2 pollers at once and a route allowing 20 queries a second: 10 each
    clock = Clock(0.0)
    pacer = Pacer(concurrency=2, clock=clock, sleep=clock.advance)
    for _ in range(50):
        pacer.wait("dashscope", 20.0)
    # Then 50 calls from one poller take at least 49 gaps of 0.1 s
    assert clock() == pytest.approx(4.9)
    # And another route has its own pace
    before = clock()
    pacer.wait("aimlapi", 2.0)
    assert clock() == before
