"""The worker lock (one worker runs jobs at a time) and the cancel token a running job polls."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from zeal_core.errors import Cancelled
from zeal_core.progress import CancelToken

CANCEL_POLL_INTERVAL_S = 0.1  # s between two looks for the cancel file


@contextlib.contextmanager
def try_lock(path: Path, wait_s: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` if it can be had within ``wait_s`` s; yields whether it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - closed in finally; the lock lives as long as the handle
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    locked = False
                    break
                time.sleep(0.05)
        yield locked
    finally:
        handle.close()  # closing the file releases the lock


class FileCancelToken(CancelToken):
    """A cancel token that also becomes set when the job's cancel file appears (checked at most 10x/s)."""

    def __init__(self, cancel_path: Path) -> None:
        super().__init__()
        self._path = cancel_path
        self._last_check = 0.0

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was called or the cancel file exists."""
        if not self._event.is_set():
            now = time.monotonic()
            if now - self._last_check >= CANCEL_POLL_INTERVAL_S:
                self._last_check = now
                if self._path.exists():
                    self._event.set()
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``Cancelled`` if the job was asked to stop."""
        if self.cancelled:
            raise Cancelled("cancelled by request")

