"""The budget guard in the submit step and the reconciler, with moto S3/DynamoDB, a fake
provider and an injected clock: reject and wait over the cap, the deferred task's return
the next day, refunds, and the attempts recorded on the way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from i2v.attempts import AttemptOutcome
from i2v.budget import Budget, BudgetConfig
from i2v.domain import Task, TaskStatus, derive_task_id
from i2v.errors import ProviderOutcomeUnknown, ProviderRejected, ProviderUnavailable
from i2v.storage import SourceStore
from i2v.tasks.store import TaskStore
from i2v.usecases.outcome import Endings
from i2v.usecases.progress import Progress
from i2v.usecases.reconcile import ReconcileConfig, reconcile
from i2v.usecases.submit import Resume, SubmitOutcome, Upload, submit_upload, uploads_in
from tests.support.fakes import Clock, FakeProvider, FakeRouting, Notifications, RecordingMetrics, image_bytes
from tests.unit.conftest import Aws
from tests.unit.test_submit import CONFIG, upload

# 2026-12-01 22:00:00 UTC; each task is 720P, 5 s at $0.10/s: $0.50.
MORNING = datetime(2026, 12, 1, 22, tzinfo=UTC).timestamp()
NEXT_DAY = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
RECONCILE = ReconcileConfig(
    reconcile_after_seconds=600, task_deadline_seconds=7200, finalize_stale_seconds=4500
)


@pytest.fixture
def clock() -> Clock:
    return Clock(MORNING)


class Pipeline:
    def __init__(
        self, aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock, cap: float, action: str
    ):
        self.aws, self.store, self.provider, self.clock = aws, store, provider, clock
        self.notifications = Notifications()
        self.metrics = RecordingMetrics()
        self.budget = Budget(aws.dynamodb, aws.table, BudgetConfig(daily_usd=cap, over_budget=action))  # type: ignore[arg-type]
        self.endings = Endings(store=store, notify=self.notifications, metrics=self.metrics, clock=clock)
        self.resumed: list[str] = []

    def submit(self, item: Upload | Resume, owner: str = "msg-1") -> SubmitOutcome:
        return submit_upload(
            item,
            owner=owner,
            config=CONFIG,
            store=self.store,
            sources=SourceStore(self.aws.s3, bucket=self.aws.bucket, incoming_prefix="incoming/"),
            routing=FakeRouting({self.provider.name: self.provider}),
            endings=self.endings,
            metrics=self.metrics,
            clock=self.clock,
            budget=self.budget,
        )

    def reconcile(self) -> dict[str, int]:
        progress = Progress(store=self.store, enqueue=lambda order: None, clock=self.clock)
        return dict(
            reconcile(
                config=RECONCILE,
                providers=lambda name: self.provider,  # type: ignore[arg-type,return-value]
                progress=progress,
                endings=self.endings,
                resume=self.resumed.append,
            )
        )

    def upload(self, name: str) -> tuple[Upload, str]:
        item = upload(self.aws, f"incoming/{name}.png", image_bytes())
        return item, derive_task_id(self.aws.bucket, item.key, item.version)

    def task(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        assert task is not None
        return task


def pipeline(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock, cap: float, action: str = "wait"
) -> Pipeline:
    return Pipeline(aws, store, provider, clock, cap, action)


def test_below_and_at_the_cap_tasks_are_submitted_and_their_cost_recorded(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a cap of $1.00: two tasks, the second reaching it exactly
    p = pipeline(aws, store, provider, clock, cap=1.0)
    outcomes = [p.submit(p.upload(name)[0], owner=name) for name in ("a", "b")]
    # Then both are submitted, and the metrics say what each costs and where the day stands
    assert outcomes == [SubmitOutcome.SUBMITTED, SubmitOutcome.SUBMITTED]
    assert [v for n, v in p.metrics.recorded if n == "EstimatedCostUsd"] == [0.5, 0.5]
    assert [v for n, v in p.metrics.recorded if n == "BudgetSpentTodayUsd"] == [0.5, 1.0]
    assert p.budget.spent("2026-12-01") == 1.0


def test_over_the_cap_with_reject_the_task_is_rejected_with_the_figures_and_nothing_is_paid(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a cap of $0.80, $0.50 already spent
    p = pipeline(aws, store, provider, clock, cap=0.8, action="reject")
    assert p.submit(p.upload("a")[0], owner="a") is SubmitOutcome.SUBMITTED
    # When a second $0.50 task comes
    item, task_id = p.upload("b")
    assert p.submit(item, owner="b") is SubmitOutcome.REJECTED
    # Then the provider never saw it, and its notification says why, with its estimate
    assert len(provider.submitted) == 1
    [rejected] = p.notifications.sent
    assert (rejected.task_id, rejected.status, rejected.estimated_cost_usd) == (
        task_id,
        TaskStatus.REJECTED,
        0.5,
    )
    assert rejected.error is not None and rejected.error.code == "BUDGET_EXCEEDED"
    assert rejected.error.message == (
        "the daily budget of $0.80 (UTC day 2026-12-01) cannot take this task: $0.50 is already"
        " reserved today and its estimate is $0.50; the budget resets at 2026-12-02T00:00:00Z"
    )
    assert rejected.attempts == []  # no provider was asked
    assert p.budget.spent("2026-12-01") == 0.5


def test_over_the_cap_with_wait_the_task_is_deferred_and_comes_back_the_next_day(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a cap of $0.80, $0.50 already spent
    p = pipeline(aws, store, provider, clock, cap=0.8)
    p.submit(p.upload("a")[0], owner="a")
    # When a second task comes
    item, task_id = p.upload("b")
    assert p.submit(item, owner="b") is SubmitOutcome.DEFERRED
    # Then it waits for the next UTC day, and a notification says so
    [deferred] = p.notifications.sent
    assert (deferred.status, deferred.deferred_until, deferred.estimated_cost_usd) == (
        TaskStatus.DEFERRED,
        NEXT_DAY,
        0.5,
    )
    assert deferred.error is None and deferred.last_error is not None
    assert deferred.last_error.code == "BUDGET_EXCEEDED"
    # A duplicate delivery of its upload event changes nothing
    assert p.submit(item, owner="b-again") is SubmitOutcome.DUPLICATE
    # The reconciler leaves it alone all evening (it is not even listed), then hours past
    # the task deadline, once the day has turned, sends it back
    clock.advance(NEXT_DAY - MORNING - 1)
    assert "resumed" not in p.reconcile() and p.resumed == []
    clock.advance(1 + RECONCILE.reconcile_after_seconds + 1)
    assert p.reconcile()["resumed"] == 1 and p.resumed == [task_id]
    # And the resume message, read as the uploads queue delivers it, submits it on the new day's budget
    [resume] = list(uploads_in(Resume(task_id=task_id).message()))
    assert p.submit(resume, owner="resume-1") is SubmitOutcome.SUBMITTED
    task = p.task(task_id)
    assert task.status is TaskStatus.SUBMITTED and task.resumed_at == clock() and task.deferred_until is None
    assert len(provider.submitted) == 2
    assert (p.budget.spent("2026-12-01"), p.budget.spent("2026-12-02")) == (0.5, 0.5)
    # A second resume (the reconciler ran again before it was taken) is a duplicate
    assert p.submit(resume, owner="resume-2") is SubmitOutcome.DUPLICATE
    # Its deadline counts from its return: the next run polls it, where the task uploaded
    # with it the day before was timed out (and waits for its finalize order)
    clock.advance(RECONCILE.reconcile_after_seconds + 1)
    assert p.reconcile() == {"running": 1, "finalize_pending": 1}
    assert p.task(task_id).status is TaskStatus.RUNNING


def test_a_resume_whose_first_try_died_after_the_claim_is_submitted_by_its_retry(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0.5)
    p.submit(p.upload("a")[0], owner="a")
    item, task_id = p.upload("b")
    p.submit(item, owner="b")
    clock.advance(NEXT_DAY - MORNING + 700)
    # Given a resume that claimed the task and died before the provider answered
    assert store.resume_deferred(
        task_id, owner="resume-1", token_hash="h", now=clock(), lease_until=clock() + 180
    ).applied
    # When its message comes back after the lease
    clock.advance(181)
    assert p.submit(Resume(task_id=task_id), owner="resume-1") is SubmitOutcome.SUBMITTED
    assert p.task(task_id).status is TaskStatus.SUBMITTED


def test_a_deferred_task_not_yet_due_is_not_resumed(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0.5)
    p.submit(p.upload("a")[0], owner="a")
    item, task_id = p.upload("b")
    p.submit(item, owner="b")
    assert p.submit(Resume(task_id=task_id), owner="early") is SubmitOutcome.DUPLICATE
    assert p.task(task_id).status is TaskStatus.DEFERRED


def test_a_refused_task_gives_its_reservation_back_and_records_the_refusal(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0.5)
    provider.submit_errors.append(ProviderRejected("bad prompt", code="PROVIDER_HTTP_400"))
    item, task_id = p.upload("a")
    assert p.submit(item) is SubmitOutcome.FAILED
    assert p.budget.spent("2026-12-01") == 0.0
    [refused] = p.task(task_id).attempts
    assert (refused.route, refused.outcome, refused.estimated_charge_usd, refused.provider_task_id) == (
        "magnific",
        AttemptOutcome.REFUSED,
        0.0,
        None,
    )
    assert refused.error is not None and refused.error.code == "PROVIDER_HTTP_400"
    assert refused.ended_at == clock()
    # The day's budget is whole again: the next task fits
    assert p.submit(p.upload("b")[0], owner="b") is SubmitOutcome.SUBMITTED


def test_an_outage_gives_the_reservation_back_so_the_retry_is_counted_once(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0.5)
    provider.submit_errors.append(ProviderUnavailable("503", retry_after=30))
    item, task_id = p.upload("a")
    with pytest.raises(ProviderUnavailable):
        p.submit(item)
    assert p.budget.spent("2026-12-01") == 0.0
    clock.advance(30)
    assert p.submit(item) is SubmitOutcome.SUBMITTED
    assert p.budget.spent("2026-12-01") == 0.5
    attempts = p.task(task_id).attempts
    assert [(a.outcome, a.provider_task_id, a.estimated_charge_usd) for a in attempts] == [
        (AttemptOutcome.UNAVAILABLE, None, 0.0),
        (AttemptOutcome.ACCEPTED, "prov-1", 0.5),
    ]
    assert attempts[1].started_at == MORNING + 30 and attempts[1].ended_at is None


def test_an_unanswered_submission_keeps_its_reservation(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0.5)
    provider.submit_errors.append(ProviderOutcomeUnknown("read timed out"))
    item, task_id = p.upload("a")
    assert p.submit(item) is SubmitOutcome.UNCONFIRMED
    assert p.budget.spent("2026-12-01") == 0.5  # it may be billed
    [held] = p.task(task_id).attempts
    assert (held.outcome, held.estimated_charge_usd) == (AttemptOutcome.UNCONFIRMED, 0.5)


def test_without_a_cap_no_budget_item_is_written(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    p = pipeline(aws, store, provider, clock, cap=0)
    item, task_id = p.upload("a")
    assert p.submit(item) is SubmitOutcome.SUBMITTED
    keys = {i["task_id"]["S"] for i in aws.dynamodb.scan(TableName=aws.table)["Items"]}
    assert keys == {task_id}
    assert [n for n, _ in p.metrics.recorded] == ["TasksSubmitted", "EstimatedCostUsd"]


def test_a_deferral_whose_notification_fails_still_comes_back(
    aws: Aws, store: TaskStore, provider: FakeProvider, clock: Clock
) -> None:
    # Given a deferral whose notification cannot be published
    p = pipeline(aws, store, provider, clock, cap=0.5)
    p.submit(p.upload("a")[0], owner="a")
    item, task_id = p.upload("b")
    p.notifications.fail_next = 1
    # Then the task is deferred all the same (the heads-up is only logged as lost)
    assert p.submit(item, owner="b") is SubmitOutcome.DEFERRED
    assert p.notifications.sent == [] and p.task(task_id).status is TaskStatus.DEFERRED
    # And it comes back the next day
    clock.advance(NEXT_DAY - MORNING + RECONCILE.reconcile_after_seconds + 1)
    p.reconcile()
    assert p.resumed == [task_id]
    assert p.submit(Resume(task_id=task_id), owner="resume-1") is SubmitOutcome.SUBMITTED
