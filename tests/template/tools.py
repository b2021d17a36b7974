"""The template tools live in venvs of their own, their pins conflicting with the app's:
cfn-lint and aws-sam-translator in .venv-tools, checkov in .venv-checkov. Tests call them
as subprocesses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = ROOT / ".venv-tools"
CHECKOV_VENV = ROOT / ".venv-checkov"
TEMPLATE = ROOT / "template.yaml"
SETUP_HINT = "`make template` creates it (pins in tools/requirements-*.txt)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def tool(name: str, venv: Path = TOOLS_VENV) -> Path:
    """The path of one tools-venv executable; skips only when the venv is absent outside CI."""
    path = venv / "bin" / name
    if path.exists():
        return path
    message = f"{path} is missing; {SETUP_HINT}"
    if venv.exists() or in_ci():
        pytest.fail(message)
    pytest.skip(f"{venv.name} is missing (not in CI); {SETUP_HINT}")


def run(command: list[str | Path], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("cfn-lint"), template])


def sam_translate(template: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("python"), ROOT / "tools" / "sam_translate.py", template, output])


def checkov(template: Path) -> subprocess.CompletedProcess[str]:
    """checkov's CloudFormation checks (it reads SAM too) as JSON, offline: without
    --skip-download it fetches Prisma Cloud's guidelines, and it asks PyPI for a newer
    version of itself unless told not to."""
    return run(
        [
            tool("checkov", CHECKOV_VENV),
            *("--file", template, "--framework", "cloudformation"),
            *("--skip-download", "--output", "json"),
        ],
        env={"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
