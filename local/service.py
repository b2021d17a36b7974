"""What every piece of the local stack that runs in the background has in common."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class BackgroundService:
    """Started with `start()` or `with`, and stopped however the block ends."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
