"""The template tools (cfn-lint, aws-sam-translator) live in their own venv, .venv-tools:
their pins conflict with the app's. Tests call them as subprocesses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = ROOT / ".venv-tools"
TEMPLATE = ROOT / "template.yaml"
SETUP_HINT = "create it with `make tools` (pins in tools/requirements-tools.txt)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def tool(name: str) -> Path:
    """The path of one tools-venv executable; skips only when the venv is absent outside CI."""
    path = TOOLS_VENV / "bin" / name
    if path.exists():
        return path
    message = f"{path} is missing; {SETUP_HINT}"
    if TOOLS_VENV.exists() or in_ci():
        pytest.fail(message)
    pytest.skip(f".venv-tools is missing (not in CI); {SETUP_HINT}")


def run(command: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("cfn-lint"), template])


def sam_translate(template: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("python"), ROOT / "tools" / "sam_translate.py", template, output])
