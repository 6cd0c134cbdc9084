"""Progress of long work on a terminal or in a log, for the command line, benchmarks and pipeline stages.

A ``TerminalProgress`` is a ``ProgressCallback``. On a terminal it draws one tqdm bar that each stage
(``reference``, ``decode``, ``train``, ...) takes over in turn and that is cleared when the command ends, so
only its answer stays on screen. Anywhere else (cron, CI, a log file, a pipe) it writes a handful of plain
lines: one when a stage starts and one as it passes each quarter (at most five a stage), one for each new
status message and each milestone (an epoch's result, also kept above the bar on a terminal), and one a
minute in between on long stages. ``quiet`` writes nothing. Library code never sees any of this: it calls its
``progress`` callback, whatever is behind it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from zeal_core.progress import ProgressEvent
from zeal_core.textreport.layout import clip, output_width, safe

MODES = ("auto", "bar", "lines", "quiet")
LINE_STEPS = 4  # lines a stage with a known total gets between start and end: at 25, 50, 75 and 100 %
HEARTBEAT_S = 60.0  # seconds: the longest a log goes without a line while a stage runs
TICK_S = 1.0  # seconds between redraws of an idle bar (its clock keeps running during a long step)


@dataclass
class _Stage:
    """What the line writer remembers about the running stage."""

    name: str
    step: int = -1  # the last quarter written (0 = the start)
    message: str = ""  # the last status message written
    written_at: float = field(default_factory=time.monotonic)


class TerminalProgress:
    """A progress callback that draws one bar on a terminal and writes a few lines anywhere else."""

    def __init__(self, stream: TextIO | None = None, mode: str = "auto") -> None:
        """Report to ``stream`` (default: ``sys.stderr`` at each write).

        Args:
            stream: Where to write; stdout stays free for the command's answer.
            mode: ``auto`` (a bar on a terminal, else lines), ``bar``, ``lines`` or ``quiet``.
        """
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: use one of {MODES}")
        self._stream = stream
        self.mode = mode
        self._bar: Any = None
        self._stage: _Stage | None = None
        self._lock = threading.Lock()  # the bar is drawn by the caller's thread and by the ticker
        self._stop = threading.Event()

    @property
    def stream(self) -> TextIO:
        """The stream written to (``sys.stderr`` unless one was given)."""
        return self._stream if self._stream is not None else sys.stderr

    def _resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        isatty = getattr(self.stream, "isatty", None)
        return "bar" if isatty is not None and isatty() else "lines"

    def __call__(self, event: ProgressEvent) -> None:
        """Show one progress event."""
        mode = self._resolved_mode()
        if mode == "bar":
            if event.milestone:  # kept above the bar, as a log line would be
                self.write(clip(f"[{safe(event.stage)}] {safe(event.message)}", output_width()))
            with self._lock:
                self._show_bar(event)
        elif mode == "lines":
            self._show_line(event)

    # Lines (logs, pipes) --------------------------------------------------------------------------------

    def _show_line(self, event: ProgressEvent) -> None:
        stage, fraction, now = self._stage, event.fraction, time.monotonic()
        message = safe(event.message)
        if stage is None or stage.name != event.stage:
            stage = self._stage = _Stage(event.stage)
            due = True
        elif fraction is not None:
            due = int(fraction * LINE_STEPS) > stage.step
        else:  # unknown total: a new status message, or a heartbeat while bytes or steps go by
            due = event.done == 0 and message != stage.message
        due = due or event.milestone or now - stage.written_at >= HEARTBEAT_S
        if not due:
            return
        if fraction is not None:
            stage.step = max(stage.step, int(fraction * LINE_STEPS))
        stage.message, stage.written_at = message, now
        share = f" {fraction:6.1%}" if fraction is not None else ""
        self._write_line(f"[{safe(event.stage)}]{share} {message}".rstrip())

    def _write_line(self, line: str) -> None:
        print(clip(line, output_width()), file=self.stream, flush=True)

    # One bar (a terminal) -------------------------------------------------------------------------------

    def _show_bar(self, event: ProgressEvent) -> None:
        bar = self._bar
        if bar is None:
            from tqdm import tqdm

            bar = self._bar = tqdm(file=self.stream, leave=False, dynamic_ncols=True, mininterval=0.1,
                                   total=None, bar_format=self._format(None))
            self._stop = threading.Event()  # one per bar: an old ticker never outlives its bar
            threading.Thread(target=self._tick, args=(self._stop,), name="progress-ticker",
                             daemon=True).start()
        total = event.total if event.total else None
        room = max(10, (bar.ncols or output_width()) - 60)
        bar.set_postfix_str(clip(safe(event.message), room), refresh=False)
        new_stage = self._stage is None or self._stage.name != event.stage or bar.total != total
        if new_stage:  # the bar passes to the next stage: its name, format and count
            self._stage = _Stage(event.stage)
            bar.bar_format = self._format(total)
            bar.set_description_str(safe(event.stage), refresh=False)
            bar.reset(total=total)
        if event.done >= bar.n:
            bar.update(event.done - bar.n)
        else:  # a stage that starts over (a new epoch counted from zero)
            bar.n = event.done
        if new_stage or total is None or event.done >= total:
            bar.refresh()  # a new stage, a status message or a stage's end shows at once

    def _tick(self, stop: threading.Event) -> None:
        """Redraw the bar every ``TICK_S`` so that its elapsed time moves during a step that takes long
        (fitting the diagnosis is one step of a minute)."""
        while not stop.wait(TICK_S):
            with self._lock:
                if self._bar is None:
                    return
                self._bar.refresh()

    @staticmethod
    def _format(total: float | None) -> str:
        # tqdm puts ", " before a postfix: the stage's message follows the times, as in tqdm's own layout.
        if total is None:
            return "{desc} [{elapsed}{postfix}]"
        return "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"

    # Shared ---------------------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Print a line (a log message, a warning) without breaking the bar."""
        with self._lock:
            if self._bar is not None:
                from tqdm import tqdm

                tqdm.write(text, file=self.stream)
                return
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Clear the bar (the command's answer comes next) and forget the stage."""
        self._stop.set()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._stage = None


_current = TerminalProgress()


def current() -> TerminalProgress:
    """The progress display the command line is using now."""
    return _current


def start(*, quiet: bool = False, stream: TextIO | None = None) -> TerminalProgress:
    """A fresh display for one command (``quiet``: none at all); closes the one before."""
    global _current
    _current.close()
    _current = TerminalProgress(stream, mode="quiet" if quiet else "auto")
    return _current


def stderr_progress(event: ProgressEvent) -> None:
    """Show ``event`` on the current display (a bar on a terminal, a few lines in a log)."""
    _current(event)


class ProgressLogHandler(logging.Handler):
    """A logging handler that prints through the current display, so a warning never breaks the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            current().write(self.format(record))
        except Exception:  # logging must never raise into the work
            self.handleError(record)
