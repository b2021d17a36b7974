"""The small chaos run of `make test`: 40 uploads over every route with the faults of
`make chaos`, on a fresh local stack. It must meet the full run's targets, so the run, its
faults and its report cannot rot (docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.chaos import report
from local.chaos.plan import ROUTES, ChaosPlan
from local.chaos.run import run

pytestmark = pytest.mark.integration

SMALL_RUN = ChaosPlan(seed=2026, uploads=40, spread_seconds=15.0)


def test_a_small_chaos_run_loses_nothing_duplicates_nothing_and_notifies_everything(tmp_path: Path) -> None:
    # Given / When the small run, reported as `make chaos` reports
    record = run(SMALL_RUN, tmp_path / "run")
    found = report.write(record, tmp_path / "reports")

    # Then every upload ended and was announced, with no second video or unexplained
    # second paid task, whatever was injected
    assert found["lost_uploads"] == []
    assert found["duplicate_videos"] == 0 and found["succeeded_without_video"] == 0
    assert found["unnotified_tasks"] == []
    assert found["duplicate_submissions_unexplained"] == []
    assert found["conflicting_notifications"] == 0
    assert all(found["targets"].values()), found["targets"]
    assert sum(found["terminal"].values()) >= found["uploads"] == 40
    assert set(found["by_route"]) >= set(ROUTES)
    # ... and the faults were really there, on at least 15 % of the uploads
    assert found["uploads_with_faults_share"] >= 0.15
    assert len(found["faults_injected"]) >= 8, found["faults_injected"]
    assert json.loads((tmp_path / "reports" / "chaos.json").read_text())["seed"] == 2026
    assert (tmp_path / "reports" / "chaos.png").read_bytes().startswith(b"\x89PNG")
