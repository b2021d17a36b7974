"""The local Lambda worker's hooks: modules a test names to wrap a process's clients or handler."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from local.lambda_worker import load_hooks

HOOK = """
installed = []

def install():
    installed.append(True)

def wrap_handler(handler):
    return lambda event, context: ("wrapped", handler(event, context))
"""


def test_each_named_hook_is_installed_and_may_wrap_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hook_for_test.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    hooks = load_hooks(" hook_for_test , ")
    assert [hook.__name__ for hook in hooks] == ["hook_for_test"]
    assert hooks[0].installed == [True]
    handler: Any = hooks[0].wrap_handler(lambda event, context: event["n"] + 1)
    assert handler({"n": 1}, None) == ("wrapped", 2)
    sys.modules.pop("hook_for_test")


def test_no_hooks_named_loads_nothing() -> None:
    assert load_hooks("") == []


def test_a_missing_hook_fails_loudly() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_hooks("local.no_such_hook")
