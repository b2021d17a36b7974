"""The template, as written and as SAM translates it, loaded once per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.template import load_template
from tests.template.tools import TEMPLATE, sam_translate


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="session")
def translated_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("sam") / "template.json"
    result = sam_translate(TEMPLATE, output)
    assert result.returncode == 0, f"SAM translation failed:\n{result.stdout}{result.stderr}"
    return output


@pytest.fixture(scope="session")
def translated(translated_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(translated_path.read_text(encoding="utf-8"))
    return document
