"""`make build`'s check (tools/check_build.sh), run with a PATH of fake programs: it names
what sam build lacks and how to get it, and lets a machine that has it through."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "check_build.sh"
BASH = shutil.which("bash") or "/bin/bash"


def fake_program(bin_dir: Path, name: str, script: str) -> None:
    program = bin_dir / name
    program.write_text(f"#!{BASH}\n{script}\n", encoding="utf-8")
    program.chmod(0o755)


def python_reporting(version: str) -> str:
    """A fake interpreter that answers the check's version probe as `version` would."""
    return f'echo "{version}"'


def run_check(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Only the fakes are on PATH: no real python3.13, sam or docker of this machine counts.
    return subprocess.run(
        [BASH, str(CHECK), *args],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def test_without_python_3_13_it_says_what_is_missing_and_how_to_get_it(bin_dir: Path) -> None:
    # Given sam, and only a Python 3.11 on PATH
    fake_program(bin_dir, "sam", 'echo "SAM CLI, version 1.170.0"')
    fake_program(bin_dir, "python3", python_reporting("3.11"))

    # When the check runs
    result = run_check(bin_dir)

    # Then it fails, naming what it found and each way to a python3.13, or the container
    assert result.returncode == 1
    assert "no Python 3.13 on PATH" in result.stderr
    assert "Binary validation failed for python" in result.stderr
    assert f"python3 at {bin_dir}/python3 is Python 3.11" in result.stderr
    assert "uv python install 3.13" in result.stderr
    assert "make build CONTAINER=1" in result.stderr
    assert "sam build --use-container" in result.stderr
    assert "sam) is not on PATH" not in result.stderr


def test_a_python3_13_that_does_not_run_is_reported_with_its_error(bin_dir: Path) -> None:
    # Given a python3.13 that fails as a pyenv shim of an unselected version does
    fake_program(bin_dir, "sam", "true")
    fake_program(bin_dir, "python3.13", 'echo "pyenv: python3.13: command not found" >&2; exit 127')

    # When the check runs
    result = run_check(bin_dir)

    # Then it fails and shows that program's own error
    assert result.returncode == 1
    assert f"python3.13 at {bin_dir}/python3.13 does not run (pyenv: python3.13: command not found)" in (
        result.stderr
    )


def test_without_sam_or_any_python_both_are_named(bin_dir: Path) -> None:
    # Given an empty PATH
    # When the check runs
    result = run_check(bin_dir)

    # Then both missing programs are named, with how to install sam
    assert result.returncode == 1
    assert "the AWS SAM CLI (sam) is not on PATH" in result.stderr
    assert "uv tool install aws-sam-cli" in result.stderr
    assert "Found: none of python3.13, python3, python." in result.stderr


@pytest.mark.parametrize("name", ["python3.13", "python3", "python"])
def test_sam_and_a_python_3_13_under_any_name_sam_accepts_pass(bin_dir: Path, name: str) -> None:
    # Given sam and a Python 3.13 under one of the names sam looks for
    fake_program(bin_dir, "sam", "true")
    fake_program(bin_dir, name, python_reporting("3.13"))

    # When the check runs
    result = run_check(bin_dir)

    # Then it passes silently
    assert (result.returncode, result.stderr) == (0, "")


def test_the_container_build_needs_a_docker_daemon_not_python(bin_dir: Path) -> None:
    # Given sam and a docker client whose daemon is down, and no Python at all
    fake_program(bin_dir, "sam", "true")
    fake_program(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')

    # When the container build is checked
    result = run_check(bin_dir, "--use-container")

    # Then the daemon is what it reports, and no Python is asked for
    assert result.returncode == 1
    assert "its daemon does not answer (Cannot connect to the Docker daemon)" in result.stderr
    assert "Python 3.13" not in result.stderr

    # When the daemon answers
    fake_program(bin_dir, "docker", 'echo "27.3.1"')
    result = run_check(bin_dir, "--use-container")

    # Then the container build may go ahead
    assert (result.returncode, result.stderr) == (0, "")


def test_make_build_runs_the_check_before_sam(bin_dir: Path) -> None:
    # Given no sam on PATH (a fake python3.13 so that only sam is missing)
    fake_program(bin_dir, "python3.13", python_reporting("3.13"))
    make = shutil.which("make")
    assert make is not None

    # When make build runs (the fake sam is absent, so nothing is built)
    result = subprocess.run(
        [make, "--no-print-directory", "build", f"SHELL={BASH}"],
        cwd=ROOT,
        env={"PATH": f"{bin_dir}:{Path(BASH).parent}:{Path(make).parent}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then the check stops it with its message, before sam build is tried
    assert result.returncode != 0
    assert "the AWS SAM CLI (sam) is not on PATH" in result.stderr
    assert "sam build" not in result.stdout
