"""Which route takes an upload: the one it names, the primary, or the next after a
confirmed failure; the route's own rules; polls for polling routes; never paying twice."""

from __future__ import annotations

from typing import Any

import pytest

from i2v.domain import TaskStatus, derive_task_id
from i2v.errors import ProviderOutcomeUnknown, ProviderUnavailable
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from i2v.usecases.poll import PollOrder
from i2v.usecases.submit import SubmitOutcome, submit_upload
from tests.support.fakes import (
    Clock,
    FakeProvider,
    FakeRouting,
    Notifications,
    RecordingMetrics,
    fake_route_settings,
    image_bytes,
)
from tests.unit.conftest import Aws
from tests.unit.test_submit import CONFIG, upload


@pytest.fixture
def magnific() -> FakeProvider:
    return FakeProvider(name="magnific")


@pytest.fixture
def dashscope() -> FakeProvider:
    return FakeProvider(name="dashscope", supports_webhooks=False)


@pytest.fixture
def routing(magnific: FakeProvider, dashscope: FakeProvider) -> FakeRouting:
    return FakeRouting(
        {"magnific": magnific, "dashscope": dashscope},
        settings={
            "magnific": fake_route_settings(),
            # No HappyHorse 1.1 and at most 10 s on this route, as a route may say.
            "dashscope": fake_route_settings(model_1_1="", duration_max=10, price_1080p=0.2),
        },
    )


@pytest.fixture
def polls() -> list[PollOrder]:
    return []


@pytest.fixture
def run(
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    polls: list[PollOrder],
    notifications: Notifications,
    metrics: RecordingMetrics,
    clock: Clock,
) -> Any:
    sources = SourceStore(aws.s3, bucket=aws.bucket, incoming_prefix="incoming/")
    endings = Endings(store=store, notify=notifications, metrics=metrics, clock=clock)

    def submit(key: str, metadata: dict[str, str] | None = None, owner: str = "msg-1") -> SubmitOutcome:
        return submit_upload(
            upload(aws, key, image_bytes(), metadata),
            owner=owner,
            config=CONFIG,
            store=store,
            sources=sources,
            routing=routing,
            endings=endings,
            metrics=metrics,
            clock=clock,
            first_poll=polls.append,
        )

    return submit


def task_of(aws: Aws, store: TaskStore, key: str) -> Any:
    task = store.get(derive_task_id(aws.bucket, key, "0055AED6DCD90281E5"))
    assert task is not None
    return task


def test_an_upload_goes_to_the_primary_with_its_route_in_the_callback_url(
    run: Any, aws: Aws, store: TaskStore, magnific: FakeProvider, dashscope: FakeProvider
) -> None:
    assert run("incoming/a.png") is SubmitOutcome.SUBMITTED
    [request] = magnific.submitted
    assert request.webhook_url is not None and "/callbacks/magnific/" in request.webhook_url
    assert dashscope.submitted == []
    assert task_of(aws, store, "incoming/a.png").provider.name == "magnific"


def test_the_provider_metadata_key_picks_a_configured_route_and_a_polling_route_gets_its_first_poll(
    run: Any, aws: Aws, store: TaskStore, dashscope: FakeProvider, polls: list[PollOrder]
) -> None:
    assert run("incoming/b.png", {"provider": "dashscope", "model": "1.0"}) is SubmitOutcome.SUBMITTED

    [request] = dashscope.submitted
    assert request.webhook_url is None  # a polling route is given no webhook
    task = task_of(aws, store, "incoming/b.png")
    assert (task.provider.name, task.provider.task_id, task.status) == (
        "dashscope",
        "prov-1",
        TaskStatus.SUBMITTED,
    )
    assert task.estimated_cost_usd == pytest.approx(0.1 * 5)  # 720P default at 0.1/s
    [order] = polls
    assert (order.task_id, order.route, order.provider_task_id, order.model) == (
        task.task_id,
        "dashscope",
        "prov-1",
        "1.0",
    )


@pytest.mark.parametrize(
    ("metadata", "code", "words", "estimate"),
    [
        ({"provider": "nowhere"}, "ROUTE_NOT_CONFIGURED", "'nowhere' is not configured", None),
        ({"provider": "dashscope", "model": "1.1"}, "UNSUPPORTED_OPTION", "HappyHorse 1.1", 0.5),
        (
            {"provider": "dashscope", "duration": "12"},
            "UNSUPPORTED_OPTION",
            "duration 12 s (takes 3..10 s)",
            1.2,
        ),
    ],
)
def test_a_route_or_option_the_stack_cannot_serve_is_rejected_before_any_paid_call(
    run: Any,
    magnific: FakeProvider,
    dashscope: FakeProvider,
    notifications: Notifications,
    metadata: dict[str, str],
    code: str,
    words: str,
    estimate: float | None,
) -> None:
    assert run("incoming/c.png", metadata) is SubmitOutcome.REJECTED
    assert magnific.submitted == [] and dashscope.submitted == []
    [task] = notifications.sent
    assert task.status is TaskStatus.REJECTED
    assert task.error is not None and task.error.code == code and words in task.error.message
    # The task (and its notification) names the route whose rules judged it, and what it
    # would have charged (nothing for a route the stack does not have)
    assert task.provider.name == metadata["provider"] and task.estimated_cost_usd == estimate


def test_a_confirmed_failure_lets_the_retry_fail_over_to_the_next_route(
    run: Any,
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    magnific: FakeProvider,
    dashscope: FakeProvider,
) -> None:
    # Given the primary answering 503 (a confirmed refusal: it did not take the task)
    magnific.submit_errors.append(ProviderUnavailable("503"))
    with pytest.raises(ProviderUnavailable):
        run("incoming/d.png")
    assert routing.failures == ["magnific"]

    # When its breaker is open by the time the message comes back
    routing.down.add("magnific")
    assert run("incoming/d.png", owner="msg-2") is SubmitOutcome.SUBMITTED

    # Then the retry went to the next route, which the task and its cost now name
    assert magnific.submitted == [] and len(dashscope.submitted) == 1
    task = task_of(aws, store, "incoming/d.png")
    assert (task.provider.name, task.submit_attempts, task.released) == ("dashscope", 2, False)
    assert task.estimated_cost_usd == pytest.approx(0.1 * 5)


def test_a_retry_after_a_crash_stays_on_the_route_that_may_have_taken_it(
    run: Any,
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    magnific: FakeProvider,
    dashscope: FakeProvider,
    clock: Clock,
) -> None:
    # Given a first attempt whose process died during the call (nothing released the task)
    class Crash(BaseException):
        pass

    def crash(request: Any) -> str:
        raise Crash

    original = magnific.submit
    magnific.submit = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        run("incoming/e.png")
    magnific.submit = original  # type: ignore[method-assign]

    # When the message comes back after the lease, with the primary's breaker open
    routing.down.add("magnific")
    clock.advance(600)
    assert run("incoming/e.png", owner="msg-2") is SubmitOutcome.SUBMITTED

    # Then it is not moved to another route (that could pay twice)
    assert dashscope.submitted == [] and len(magnific.submitted) == 1
    assert task_of(aws, store, "incoming/e.png").provider.name == "magnific"


def test_a_submission_that_got_no_answer_is_held_never_resent(
    run: Any,
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    magnific: FakeProvider,
    dashscope: FakeProvider,
    metrics: RecordingMetrics,
    notifications: Notifications,
) -> None:
    magnific.submit_errors.append(ProviderOutcomeUnknown("Magnific did not answer: ReadTimeout"))

    assert run("incoming/f.png") is SubmitOutcome.UNCONFIRMED
    task = task_of(aws, store, "incoming/f.png")
    assert task.status is TaskStatus.UNCONFIRMED
    assert task.last_error is not None and task.last_error.code == "PROVIDER_OUTCOME_UNKNOWN"
    assert routing.failures == ["magnific"] and metrics.total("SubmissionsUnconfirmed") == 1

    # A redelivery of the same upload submits nothing, anywhere
    routing.down.add("magnific")
    assert run("incoming/f.png", owner="msg-2") is SubmitOutcome.DUPLICATE
    assert magnific.submitted == [] and dashscope.submitted == []
    assert notifications.sent == []


def test_a_failed_first_poll_schedule_leaves_the_task_submitted_for_the_reconciler(
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    metrics: RecordingMetrics,
    clock: Clock,
    notifications: Notifications,
) -> None:
    def broken(order: PollOrder) -> None:
        raise ConnectionError("SQS unreachable")

    outcome = submit_upload(
        upload(aws, "incoming/g.png", image_bytes(), {"provider": "dashscope"}),
        owner="msg-1",
        config=CONFIG,
        store=store,
        sources=SourceStore(aws.s3, bucket=aws.bucket, incoming_prefix="incoming/"),
        routing=routing,
        endings=Endings(store=store, notify=notifications, metrics=metrics, clock=clock),
        metrics=metrics,
        clock=clock,
        first_poll=broken,
    )
    assert outcome is SubmitOutcome.SUBMITTED
    assert task_of(aws, store, "incoming/g.png").status is TaskStatus.SUBMITTED
    assert metrics.total("PollNotScheduled") == 1


def test_an_unanswered_submission_is_held_even_when_the_breakers_write_fails(
    run: Any,
    aws: Aws,
    store: TaskStore,
    routing: FakeRouting,
    magnific: FakeProvider,
    dashscope: FakeProvider,
) -> None:
    # Given a create call that got no answer, and the breaker's count failing to be written
    magnific.submit_errors.append(ProviderOutcomeUnknown("Magnific did not answer: ReadTimeout"))
    routing.failed_error = RuntimeError("the breaker's UpdateItem failed")

    # When the upload is submitted / Then the record fails (it will be delivered again)
    with pytest.raises(RuntimeError):
        run("incoming/g.png")

    # and the task was held first, so the redelivery submits nothing, anywhere
    assert task_of(aws, store, "incoming/g.png").status is TaskStatus.UNCONFIRMED
    routing.failed_error = None
    assert run("incoming/g.png", owner="msg-2") is SubmitOutcome.DUPLICATE
    assert magnific.submitted == [] and dashscope.submitted == []
