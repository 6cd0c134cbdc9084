"""The label-free parts of a fitted reference: accuracy estimates and the drift diagnosis.

Production images come without labels, so after "did it drift?" a check answers "how much accuracy does it
cost?" (``zeal_core.estimate``) and "what kind of drift is it?" (``zeal_core.diagnose``). Both are fitted
on the clean reference, whose labels are known:

- the estimators that need nothing else (``pm-atc``, ``atc-mc``, ...) fit in milliseconds, on first use;
- the diagnosis and the bank-fitted estimators (``shift-calibrated``) also need the shift bank: the
  reference images under every corruption x severity, 95 forward passes over them. ``warm`` builds (or
  loads) the bank and fits them, in a background thread when asked; until it is done a check lists
  "diagnosis" under ``CheckReport.pending`` and pages show its progress.

Everything here is read-only after fitting, so one instance serves every session at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zeal_core.embed import Embeddings
from zeal_core.errors import Cancelled
from zeal_core.progress import CancelToken, ProgressCallback, ProgressEvent, report
from zeal_core.shifts import ShiftedSet

# Estimators a check runs, preferred first (the first available one is "the" estimate of a report):
# shift-calibrated had the lowest error on held-out corruptions and on the new drift kinds, digits and
# Imagenette; until the warm-up has fitted it, prior-matched ATC, the best of those that need no bank
# (docs/estimation.md). Under a diagnosed label shift pm-atc goes first (``preferred_order``).
DEFAULT_ESTIMATORS = ("shift-calibrated", "pm-atc", "atc-mc", "average-confidence", "doc")
LABEL_SHIFT_ESTIMATOR = "pm-atc"  # reads a changed class mix as such; shift-calibrated reads it as errors
DIAGNOSER = "signature"  # the registered diagnoser a check uses

# A bank builder: (progress, cancel) -> the shift bank of the bank reference (built or loaded from disk).
BankBuilder = Callable[[ProgressCallback | None, CancelToken | None], Sequence[ShiftedSet]]


@dataclass(frozen=True)
class WarmStatus:
    """Where the warm-up of the bank-fitted parts stands (what a page's progress bar shows)."""

    ready: bool  # the diagnosis and the bank-fitted estimators can be used
    running: bool  # a warm-up is under way
    fraction: float  # share done in [0, 1]
    message: str  # the current step, in words
    error: str | None = None  # why the last warm-up failed, if it did
    seconds: float | None = None  # how long the finished warm-up took


class LabelFreeParts:
    """Estimators and diagnoser of one reference, fitted lazily (see the module docstring)."""

    def __init__(self, reference: Embeddings | None, bank_reference: Embeddings | None,
                 build_bank: BankBuilder | None, *, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
                 seed: int = 0, fitted: Mapping[str, Any] | None = None, warm_store: Any = None) -> None:
        """Args:
            reference: The clean labelled reference (the bank-free estimators fit on all of it); None
                when its labels are unknown (nothing label-free can be fitted then).
            bank_reference: The reference rows the bank is made of (the diagnosis fits on them); None
                when there is no model to build a bank with (a reference of embeddings).
            build_bank: Builds or loads that bank; None as for ``bank_reference``.
            estimators: Registered estimator names, preferred first.
            seed: Seeds the diagnosis's calibration and the estimators' bootstrap.
            fitted: Bank-free estimators fitted earlier on this same reference, by name (a process that
                loads a kept reference); the others are fitted on first use.
            warm_store: Where the warm-up is kept between processes: ``load() -> (diagnoser, estimators)
                or None``, ``save(diagnoser, estimators)`` and ``lock()``, a context manager held while
                fitting (``zeal_core.reference.fit.WarmBundle``); None fits in every process.
        """
        from zeal_core.estimate import estimator_info

        self.reference = reference
        self.bank_reference = bank_reference
        self._build_bank = build_bank
        self.estimator_names = tuple(estimators)
        self._needs_bank = {name: estimator_info(name).needs_bank for name in self.estimator_names}
        self.seed = int(seed)
        self._lock = threading.Lock()
        self._estimators: dict[str, Any] = {name: estimator for name, estimator in (fitted or {}).items()
                                            if name in self._needs_bank and not self._needs_bank[name]}
        self._diagnoser: Any = None
        self._thread: threading.Thread | None = None
        self._status = WarmStatus(ready=False, running=False, fraction=0.0, message="not started")
        self._warm_store = warm_store
        if warm_store is not None and self.can_warm:
            self._install(warm_store.load(), "loaded")

    # ------------------------------------------------------------------------------------------ status

    @property
    def can_warm(self) -> bool:
        """Whether a bank can be built (a reference fitted from a model, with enough images)."""
        return self._build_bank is not None and self.bank_reference is not None

    @property
    def ready(self) -> bool:
        """The bank-fitted parts are fitted."""
        return self._diagnoser is not None

    def status(self) -> WarmStatus:
        """The warm-up's progress (cheap: pages poll it)."""
        return self._status

    # --------------------------------------------------------------------------------------------- use

    def estimates(self, sample: Embeddings) -> tuple[tuple[Any, ...], bool]:
        """Every available estimate of ``sample``'s accuracy (labels never read), preferred first, and
        whether some estimator is still waiting for the warm-up."""
        if self.reference is None:
            return (), False
        self._fit_bank_free()
        results, waiting = [], False
        for name in self.estimator_names:
            estimator = self._estimators.get(name)
            if estimator is None:
                waiting = waiting or (self._needs_bank[name] and self.can_warm)
                continue
            results.append(estimator.estimate(sample))
        return tuple(results), waiting

    def diagnose(self, sample: Embeddings, drift_detected: bool | None) -> Any:
        """The diagnosis of ``sample``, or None until the warm-up has fitted the diagnoser."""
        diagnoser = self._diagnoser
        return None if diagnoser is None else diagnoser.diagnose(sample, drift_detected=drift_detected)

    # ------------------------------------------------------------------------------------------- warming

    def warm(self, *, background: bool = False, progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> WarmStatus:
        """Build or load the shift bank and fit the diagnoser and bank-fitted estimators (once).

        Args:
            background: Start a daemon thread and return at once (pages poll ``status()``); a second
                call while it runs changes nothing.
            progress: Also receives the warm-up's events (``shift-bank``, ``diagnosis``).
            cancel: Checked between the bank's shifts.

        Raises:
            ConfigError / Cancelled: In the foreground, what the bank or the fits raised.
        """
        if not self.can_warm or self.ready:
            return self._status
        if background:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._warm_quietly, args=(progress, cancel),
                                                    name="zeal-label-free-warm", daemon=True)
                    self._set(running=True, message="starting", error=None)
                    self._thread.start()
            return self._status
        with self._lock:  # one warm-up at a time: a foreground caller waits for a background one
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join()
            if self.ready:
                return self._status
        self._warm(progress, cancel)
        return self._status

    def _warm_quietly(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
        from zeal_core.scheduling import yield_to_checks

        yield_to_checks()  # a background fit inside a server: the sessions' checks come first
        try:
            self._warm(progress, cancel)
        except Cancelled:
            self._set(running=False, message="cancelled")
        except Exception as error:  # a background thread reports, it cannot raise
            self._set(running=False, message="failed", error=f"{type(error).__name__}: {error}")

    def _warm(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
        if self._warm_store is None:
            self._fit_warm(progress, cancel)
            return
        with self._warm_store.lock():  # another process warming the same model: wait, then load its fit
            if self._install(self._warm_store.load(), "loaded"):
                return
            fitted = self._fit_warm(progress, cancel)
            self._install(self._warm_store.save(*fitted), self._status.message)  # what later processes load

    def _install(self, warmed: tuple[Any, dict[str, Any]] | None, how: str) -> bool:
        """Use a warm-up's diagnoser and bank-fitted estimators; False when there is none."""
        if warmed is None:
            return False
        diagnoser, fitted = warmed
        missing = [name for name, needs in self._needs_bank.items() if needs and name not in fitted]
        if missing:
            return False  # kept for other estimator settings: fit anew
        with self._lock:
            self._estimators.update({name: fitted[name] for name in self._needs_bank if name in fitted})
            self._diagnoser = diagnoser
        self._set(ready=True, running=False, fraction=1.0, message=how, error=None)
        return True

    def _fit_warm(self, progress: ProgressCallback | None, cancel: CancelToken | None
                  ) -> tuple[Any, dict[str, Any]]:
        from zeal_core.diagnose import create_diagnoser
        from zeal_core.estimate import create_estimator

        start = time.perf_counter()
        self._set(running=True, fraction=0.0, message="building the shift bank", error=None)

        def on_bank(event: ProgressEvent) -> None:
            self._set(fraction=0.8 * (event.fraction or 0.0), message=event.message or "shift bank")
            if progress is not None:
                progress(event)

        bank = tuple(self._build_bank(on_bank, cancel))
        message = f"learning the signatures of {len(bank)} shifts"
        self._set(fraction=0.8, message=message)
        report(progress, "diagnosis", 0, 1, message)
        diagnoser = create_diagnoser(DIAGNOSER).fit(self.bank_reference, bank, seed=self.seed)
        fitted = {name: create_estimator(name, seed=self.seed).fit(self.bank_reference, bank)
                  for name in self.estimator_names if self._needs_bank[name]}
        with self._lock:
            self._estimators.update(fitted)
            self._diagnoser = diagnoser
        seconds = time.perf_counter() - start
        self._set(ready=True, running=False, fraction=1.0, message=f"ready ({seconds:.0f} s)",
                  seconds=seconds)
        report(progress, "diagnosis", 1, 1, f"diagnosis ready in {seconds:.0f} s")
        return diagnoser, fitted

    def bank_free_estimators(self) -> dict[str, Any]:
        """The fitted estimators that need no bank, by name (what a kept reference stores)."""
        with self._lock:
            return {name: estimator for name, estimator in self._estimators.items()
                    if not self._needs_bank[name]}

    def fit_bank_free(self) -> None:
        """Fit the estimators that need no bank now (they are otherwise fitted on first use)."""
        if self.reference is not None:
            self._fit_bank_free()

    def _fit_bank_free(self) -> None:
        from zeal_core.estimate import create_estimator

        with self._lock:
            for name in self.estimator_names:
                if name not in self._estimators and not self._needs_bank[name]:
                    self._estimators[name] = create_estimator(name, seed=self.seed).fit(self.reference)

    def _set(self, **changes: Any) -> None:
        values = {**self._status.__dict__, **changes}
        self._status = WarmStatus(**values)


def preferred_order(estimates: Sequence[Any], diagnosis: Any) -> tuple[Any, ...]:
    """``estimates`` with the one to show first in front: pm-atc when the diagnosis says label shift
    (shift-calibrated takes a class mix that really changed for a model predicting wrongly), else as given.
    Under "unknown shift" every estimate is an extrapolation (``zeal_core.estimate.as_extrapolation``):
    flagged, its interval widened by its error on shift families held out of its fit; under a covariate
    shift of a named family, an interval carries at least the estimator's error on that family held out
    (``zeal_core.estimate.for_family``). The diagnosis only
    says "label shift" after checking that the images still look like their classes (p(x | y) unchanged),
    so a covariate shift that collapses predictions keeps shift-calibrated first."""
    from zeal_core.estimate import as_extrapolation, for_family

    if diagnosis is not None and diagnosis.verdict == "unknown shift":
        return tuple(as_extrapolation(estimate) if hasattr(estimate, "details") else estimate
                     for estimate in estimates)
    family = getattr(getattr(diagnosis, "best", None), "family", None)
    if diagnosis is not None and diagnosis.verdict == "covariate shift" and family:
        return tuple(for_family(estimate, family) if hasattr(estimate, "details") else estimate
                     for estimate in estimates)
    if diagnosis is None or diagnosis.verdict != "label shift":
        return tuple(estimates)
    first = [estimate for estimate in estimates if estimate.estimator == LABEL_SHIFT_ESTIMATOR]
    return tuple(first + [estimate for estimate in estimates if estimate.estimator != LABEL_SHIFT_ESTIMATOR])
