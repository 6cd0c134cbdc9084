"""Progress reporting and cooperative cancellation for long work.

Library functions take ``progress: ProgressCallback | None`` and ``cancel: CancelToken | None``.
Pages turn events into ``st.progress``/``st.status``; the command line shows them on stderr (one bar on a
terminal, a few lines in a log: ``zeal_core.cli_progress``); jobs write them to their status file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeal_core.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One step of long work."""

    stage: str  # what is running, e.g. "download", "decode", "train", "evaluate"
    done: float  # units finished so far (bytes, images, steps)
    total: float | None = None  # units in all, None when unknown
    message: str = ""  # one human-readable line
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. loss, accuracy, images_per_s, eta_s
    milestone: bool = False  # a result worth keeping in a log (an epoch's validation accuracy), not a tick

    @property
    def fraction(self) -> float | None:
        """Share finished in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)


ProgressCallback = Callable[[ProgressEvent], None]


def report(progress: ProgressCallback | None, *args: Any, **kwargs: Any) -> None:
    """Send a ``ProgressEvent(*args, **kwargs)`` to ``progress`` if there is one."""
    if progress is not None:
        progress(ProgressEvent(*args, **kwargs))


class CancelToken:
    """A flag that long work checks between steps; set it from any thread to stop the work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``Cancelled`` if ``cancel`` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled by request")


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise ``Cancelled`` if ``cancel`` is set; do nothing when there is no token."""
    if cancel is not None:
        cancel.raise_if_cancelled()
