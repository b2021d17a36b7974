"""Which commit a report measured: `git describe --always --dirty` of this repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The commit checked out (`-dirty` when the tree has changes), or "unknown" without git."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    done = subprocess.run(  # noqa: S603 - git from PATH, fixed arguments
        [git, "-C", str(REPOSITORY_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"
