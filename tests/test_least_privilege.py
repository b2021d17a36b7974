"""Least privilege, checked from real calls: every AWS call the functions made in this test
session's local stacks is allowed by the policies the template gives them, and every grant
was used by one or carries its reason (tests/support/least_privilege.py).

tests/conftest.py runs this module last, once every stack of the session has stopped.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from local.lambda_worker import SESSION_AWS_CALL_LOG
from tests.support.least_privilege import (
    DESELECTED_MODULES,
    Findings,
    Session,
    compare,
    managed_reason,
    read_session,
    reason_comments,
)
from tests.template.cfn import FUNCTIONS
from tests.template.tools import ROOT, TEMPLATE, sam_translate

# The suites whose local stacks exercise every function's paths. A grant counts as unused
# only when all of them ran in this session, whole.
EXERCISING_SUITES = ("tests/integration", "tests/contract")


@pytest.fixture(scope="module")
def translated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("least-privilege") / "template.json"
    result = sam_translate(TEMPLATE, output)
    assert result.returncode == 0, f"SAM translation failed:\n{result.stdout}{result.stderr}"
    document: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def session() -> Session:
    log = os.environ.get(SESSION_AWS_CALL_LOG)
    recorded = read_session(Path(log), TEMPLATE) if log else Session()
    if not recorded.stacks:
        pytest.skip("no local stack ran in this session: run it with tests/integration and tests/contract")
    return recorded


@pytest.fixture(scope="module")
def findings(translated: dict[str, Any], session: Session) -> Findings:
    return compare(translated, session, FUNCTIONS)


def test_every_call_a_function_made_is_granted_to_it(session: Session, findings: Findings) -> None:
    # Given every distinct request the functions made in the session's stacks
    per_function = Counter(call.function for call in session.calls)
    print(
        f"{len(session.stacks)} stacks, {len(session.calls)} distinct requests {dict(per_function)}, "
        f"{session.foreign_lines} calls of functions outside them"
    )

    # Then the function's role, evaluated for that stack, allows each one
    assert not findings.ungranted, "\n".join(
        f"{c.function}: {c.action} on {c.resource} ({c.operation}, by the {c.caller}) is not granted"
        for c in findings.ungranted
    )


def test_every_grant_was_used_or_says_why_not(request: pytest.FixtureRequest, findings: Findings) -> None:
    # Given a session that ran the suites exercising the functions, whole
    missing = missing_suites(request.session)
    if missing:
        pytest.skip(
            "unused grants are judged only after a session that ran "
            f"{' and '.join(EXERCISING_SUITES)} whole; this one did not run: {', '.join(missing)}"
        )
    reasons = reason_comments(TEMPLATE.read_text(encoding="utf-8"))

    # When the grants no call used are listed with their reasons
    unexplained: list[str] = []
    explained: list[str] = []
    for grant, uses in sorted(findings.used.items(), key=lambda item: str(item[0])):
        if uses:
            continue
        reason = managed_reason(grant) or reasons.get((grant.function, grant.sid))
        (explained if reason else unexplained).append(
            f"{grant.function} {grant.policy}/{grant.sid} {grant.action}"
        )
    used = sum(1 for uses in findings.used.values() if uses)
    print(
        f"{len(findings.used)} grants: {used} used, {len(explained)} unused with a reason, {len(unexplained)} without"
    )
    print("\n".join(f"unused, explained: {line}" for line in explained))

    # Then each one carries its reason beside its statement
    failed = request.session.testsfailed
    note = f" ({failed} tests failed in this session: their calls may be missing)" if failed else ""
    assert not unexplained, (
        f"granted, never used, no `# least-privilege:` reason beside the statement{note}:\n"
        + "\n".join(unexplained)
    )


def missing_suites(session: pytest.Session) -> list[str]:
    """The exercising suites' modules this session did not run, or ran only in part."""
    ran = {str(item.path.relative_to(ROOT)) for item in session.items}
    deselected = session.config.stash.get(DESELECTED_MODULES, set())
    missing = []
    for suite in EXERCISING_SUITES:
        for module in sorted((ROOT / suite).glob("test_*.py")):
            name = str(module.relative_to(ROOT))
            if name not in ran:
                missing.append(name)
            elif name in deselected:
                missing.append(f"{name} (some tests deselected)")
    return missing
