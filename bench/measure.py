"""What every benchmark shares: the repository root and a summary of repeated samples."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated samples of one quantity."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def show(self, fmt: str = ".1f") -> str:
        return f"{self.median:{fmt}} [{self.low:{fmt}}-{self.high:{fmt}}]"


def machine() -> str:
    """The facts a reader needs to compare numbers: interpreter, platform, cores, load."""
    cores = len(os.sched_getaffinity(0))
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.system()} {platform.machine()}, {cores} usable cores; {load()}"
    )


def load() -> str:
    """Other work on the machine skews every number here: say how busy it was."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


@contextmanager
def lambda_like_python() -> Iterator[Path]:
    """A throwaway virtualenv holding what a function has on Lambda: the layer's requirements.

    The project's .venv also holds the tests' and the CLI's packages, and some libraries load
    more when their extras are present (httpx imports its command-line client, with rich and
    pygments, when click and rich are installed): timing a handler there counts imports the
    deployed function never makes. uv installs from its cache (filled by `uv sync`).
    """
    uv = shlex.split(os.environ.get("UV", "")) or [shutil.which("uv") or "uv"]
    quiet_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    with tempfile.TemporaryDirectory(prefix="i2v-bench-env-") as workdir:
        env_dir = Path(workdir) / "env"
        subprocess.run(
            [*uv, "venv", "--quiet", "--no-project", "--python", sys.executable, str(env_dir)],
            check=True,
            env=quiet_env,
        )
        python = env_dir / "bin" / "python"
        subprocess.run(
            [
                *uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python),
                "-r", str(ROOT / "layers" / "pipeline" / "requirements.txt"),
            ],
            check=True,
            env=quiet_env,
        )  # fmt: skip
        yield python
