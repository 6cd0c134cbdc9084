"""Severity sweeps computed after the page is drawn, by one low-priority worker per server process.

A Drift Lab view needs one check for its p-values and six more for its severity curves. Computing the curves
inside the page made a new user wait for seven checks, and five new users for thirty-five, before anyone
could move a slider. Here a page asks for a sweep and gets it at once when it is ready; otherwise the sweep
is queued and the page shows what it has (``sweep_when_ready`` returns None) and asks again later.

The worker runs the sweeps one after the other in a daemon thread, and its checks are background checks in
the gate (``zeal_core.scheduling.CheckGate.background``): a person's check never waits behind a sweep for
longer than the one check already running. The thread keeps the normal OS priority on purpose: a check
holds the gate's slot while it runs, and a deprioritised thread holding it on a busy CPU would make the
person's check wait far longer than one check (a priority inversion measured at 9 s per step). A newer
request from the same owner (a browser session) replaces its own request still waiting, so a fast drag
queues one sweep, not twenty.
Finished sweeps are kept per fitted reference, least recently used dropped beyond ``KEEP_PER_REFERENCE``,
without their images and features (the curves need only p-values and accuracies).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeal_core.corruptions import DriftSpec
from zeal_core.reference.fitted import FittedReference
from zeal_core.reference.report import CheckReport
from zeal_core.reference.sweep import SEVERITIES, SeveritySweep, severity_sweep, swept_spec

log = logging.getLogger(__name__)

KEEP_PER_REFERENCE = 64  # finished sweeps kept per fitted reference (a few kB each once slimmed)


@dataclass(frozen=True)
class _Request:
    """One sweep asked for."""

    key: tuple  # (swept specs' texts, choice, n, seed, parts, severities): what makes two requests the same
    reference: weakref.ReferenceType  # the fitted reference (not kept alive by the queue)
    spec: DriftSpec
    choice: str
    n: int
    seed: int
    parts: tuple[str, ...]
    severities: tuple[float, ...]
    owner: str | None  # who asked (a newer request of the same owner replaces a waiting one)


class BackgroundSweeps:
    """A queue of severity sweeps and the thread that computes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []  # oldest first
        self._running: _Request | None = None
        self._done: weakref.WeakKeyDictionary[FittedReference, OrderedDict] = weakref.WeakKeyDictionary()
        self._errors: weakref.WeakKeyDictionary[FittedReference, dict] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False  # set at exit: the worker ends after the check it is running

    def get(self, reference: FittedReference, spec: DriftSpec, choice: str, *, n: int, seed: int = 0,
            parts: Sequence[str] = ("detectors",), severities: Sequence[float] = SEVERITIES,
            owner: str | None = None) -> SeveritySweep | None:
        """The sweep if it is ready; otherwise queue it (once) and return None.

        Raises:
            ZealError: The sweep failed (for example a spec the data cannot take); asking again retries it.
        """
        levels = tuple(float(level) for level in severities)
        swept = tuple(swept_spec(spec, choice, level).text for level in levels)  # raises for a bad choice
        request = _Request(key=(swept, choice, int(n), int(seed), tuple(parts), levels),
                           reference=weakref.ref(reference), spec=spec, choice=choice, n=int(n),
                           seed=int(seed), parts=tuple(parts), severities=levels, owner=owner)
        with self._lock:
            done = self._done.get(reference, OrderedDict())
            if request.key in done and not _stale(done[request.key], reference):
                done.move_to_end(request.key)
                return done[request.key]
            error = self._errors.get(reference, {}).pop(request.key, None)
            if error is not None:
                raise error
            self._enqueue(request, reference)
        return None

    def pending(self) -> int:
        """Sweeps queued or running."""
        with self._lock:
            return len(self._waiting) + (self._running is not None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued sweep is done (tests, scripts); False if ``timeout`` s passed first."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Drop the queued sweeps and let the worker end after its current check (called at exit: a thread
        killed inside torch at interpreter shutdown aborts the whole process)."""
        with self._lock:
            self._stopping = True
            self._waiting.clear()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _enqueue(self, request: _Request, reference: FittedReference) -> None:
        """Queue ``request`` unless the same question is queued or running (call with the lock held)."""
        running = self._running
        if running is not None and running.key == request.key and running.reference() is reference:
            return
        if any(item.key == request.key and item.reference() is reference for item in self._waiting):
            return
        if self._stopping:
            return
        if request.owner is not None:  # the owner moved on: its older waiting request is not wanted any more
            self._waiting = [item for item in self._waiting if item.owner != request.owner]
        self._waiting.append(request)
        self._idle.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="severity-sweeps", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        """The worker: computes queued sweeps until none is left (or the process exits)."""
        while True:
            with self._lock:
                if not self._waiting or self._stopping:
                    self._running = None
                    self._idle.set()
                    self._thread = None
                    return
                request = self._running = self._waiting.pop(0)
            reference = request.reference()
            if reference is None:  # the reference was dropped (a new model): nobody wants this sweep
                continue
            try:
                sweep = self._sweep(reference, request)
            except Exception as error:  # handed to the page that asks next, which shows it
                log.warning("severity sweep %s of %s failed: %s", request.choice, request.spec.text, error)
                with self._lock:
                    self._errors.setdefault(reference, {})[request.key] = error
                continue
            if sweep is not None:
                self._keep(reference, request.key, _slim(sweep))

    def _sweep(self, reference: FittedReference, request: _Request) -> SeveritySweep | None:
        """The request's sweep, one background check per severity; None when stopped half-way."""
        from zeal_core.scheduling import check_gate

        reports = []
        for level in request.severities:
            if self._stopping:
                return None
            with check_gate().background():
                point = severity_sweep(reference, request.spec, request.choice, n=request.n,
                                       seed=request.seed, severities=(level,), parts=request.parts)
            reports.extend(point.reports)
        return SeveritySweep(choice=request.choice, severities=request.severities, reports=tuple(reports))

    def _keep(self, reference: FittedReference, key: tuple, sweep: SeveritySweep) -> None:
        with self._lock:
            done = self._done.setdefault(reference, OrderedDict())
            done[key] = sweep
            while len(done) > KEEP_PER_REFERENCE:
                done.popitem(last=False)


def _stale(sweep: SeveritySweep, reference: FittedReference) -> bool:
    """Whether ``sweep`` was made while the estimates were still warming up, and they are ready now."""
    return any(report.pending for report in sweep.reports) and reference.label_free.ready


def _slim(sweep: SeveritySweep) -> SeveritySweep:
    """The sweep without the reports' images, features and maps (the curves need none of them)."""
    return dataclasses.replace(sweep, reports=tuple(_slim_report(report) for report in sweep.reports))


def _slim_report(report: CheckReport) -> CheckReport:
    return dataclasses.replace(report, sample=report.sample.subset(np.arange(0)), images=None, coords=None,
                               reference_coords=None, drift_scores=None, typical=())


_SWEEPS = BackgroundSweeps()
atexit.register(_SWEEPS.stop)


def background_sweeps() -> BackgroundSweeps:
    """The process's background sweeps (one worker per server)."""
    return _SWEEPS


def sweep_when_ready(reference: FittedReference, spec: DriftSpec, choice: str, *, n: int, seed: int = 0,
                     parts: Sequence[str] = ("detectors",), owner: str | None = None) -> SeveritySweep | None:
    """``severity_sweep`` without the wait: the sweep when it is ready, else None (it is then being computed
    in the background; ask again later). See ``BackgroundSweeps.get``."""
    return _SWEEPS.get(reference, spec, choice, n=n, seed=seed, parts=parts, owner=owner)
