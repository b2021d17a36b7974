"""moto's server as the local AWS: a child process on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Self

from local.service import BackgroundService

# moto's server answers every account with this id unless told otherwise.
MOTO_ACCOUNT_ID = "123456789012"


class MotoServerError(RuntimeError):
    """moto's server did not start."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MotoServer(BackgroundService):
    """`python -m moto.server` on 127.0.0.1, started and stopped with bounded waits."""

    def __init__(self, *, start_timeout: float = 30.0, stop_timeout: float = 5.0) -> None:
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self.url = ""

    def start(self) -> Self:
        # A port picked here may be taken before moto binds it: try a few.
        last_error: MotoServerError | None = None
        for _ in range(3):
            try:
                self._launch(free_loopback_port())
                return self
            except MotoServerError as error:
                last_error = error
                self.stop()
        assert last_error is not None
        raise last_error

    def _launch(self, port: int) -> None:
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - open while moto runs; closed in stop()
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MotoServerError(f"moto's server exited early: {self._output_tail()}")
            if self._answers():
                return
            time.sleep(0.05)
        raise MotoServerError(
            f"moto's server did not answer on {self.url} within {self._start_timeout:.0f} s: "
            f"{self._output_tail()}"
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:  # noqa: S310 - loopback URL we built
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _output_tail(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")[-2000:].strip()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # Its state is in memory and disposable: no need for a graceful (1 s) shutdown.
            process.kill()
            process.wait(self._stop_timeout)
        if self._output is not None:
            self._output.close()
            self._output = None
