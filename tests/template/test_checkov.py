"""checkov on template.yaml: every check passes or is skipped inline with its reason, and
each skip is listed in docs/decisions.md (30). checkov runs once per session (~12 s)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.template.tools import ROOT, TEMPLATE, checkov

DECISIONS = ROOT / "docs" / "decisions.md"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = checkov(TEMPLATE)
    # 0: all passed; 1: some failed. Anything else (or no JSON) is checkov itself failing.
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    document = json.loads(result.stdout)
    # One framework gives one report; checkov wraps several in a list.
    reports = document if isinstance(document, list) else [document]
    assert [r["check_type"] for r in reports] == ["cloudformation"], result.stdout[-2000:]
    found: dict[str, Any] = reports[0]
    return found


def inline_skips(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(check id, logical id) -> the reason written beside the skip in the template."""
    return {
        (skip["id"], logical_id): str(skip.get("comment", "")).strip()
        for logical_id, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }


def decision_text(number: int) -> str:
    text = DECISIONS.read_text(encoding="utf-8")
    found = re.search(rf"^## {number}\. .*?(?=^## \d+\. |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert found, f"docs/decisions.md has no decision {number}"
    return found.group(0)


def test_checkov_finds_no_failed_check(report: dict[str, Any]) -> None:
    # Given checkov's report on the template
    failed = report["results"]["failed_checks"]

    # Then nothing failed: each check is fixed or skipped inline with its reason
    assert not failed, "checkov failed:\n" + "\n".join(
        f"{check['check_id']} on {check['resource']}: {check['check_name']}" for check in failed
    )


def test_checkov_read_every_resource_and_ran_its_checks(
    report: dict[str, Any], template: dict[str, Any]
) -> None:
    # Given the report's summary
    summary = report["summary"]

    # Then the template parsed, every resource was scanned and checks really ran on it
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] == len(template["Resources"])
    assert summary["passed"] >= 20, summary


def test_every_skip_has_a_reason_and_is_the_one_checkov_applied(
    report: dict[str, Any], template: dict[str, Any]
) -> None:
    # Given the skips written in the template and the ones checkov reports
    written = inline_skips(template)
    applied = {
        (check["check_id"], check["resource"].split(".", 1)[1])
        for check in report["results"]["skipped_checks"]
    }

    # Then checkov applied exactly those (a misspelt id or a skip of a check that now passes
    # would show here), and each says why in a sentence
    assert applied == set(written)
    assert all(len(reason) >= 40 for reason in written.values()), written


def test_decision_30_lists_every_skipped_check_with_its_resources(template: dict[str, Any]) -> None:
    # Given decision 30's list items ("- CKV_... (what) on Resource, Resource: why")
    items = [" ".join(item.split()) for item in re.split(r"^- ", decision_text(30), flags=re.MULTILINE)[1:]]
    listed = {item.split(" ", 1)[0]: item.split(": ", 1)[0] for item in items}

    # Then each skipped check is listed, naming every resource it is skipped on
    for check_id, logical_id in inline_skips(template):
        assert check_id in listed, f"decision 30 does not list {check_id}"
        assert re.search(rf"\b{logical_id}\b", listed[check_id]), (
            f"decision 30's {check_id} omits {logical_id}"
        )
