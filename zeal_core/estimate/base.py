"""What every label-free accuracy estimator shares: the result type, base class, intervals and registry.

An estimator is fitted once on the clean held-out reference (images the model did not train on, labels
known) and, when ``needs_bank`` is set, on a bank of synthetic shifts of those same images
(``zeal_core.shifts.build_shift_bank``). ``estimate(sample)`` then says how accurate the model is on a
sample whose labels are unknown. The base class hands the subclass ``sample.without_labels()``, so no
estimator can read a sample's labels, even by mistake.

Every estimator works on temperature-scaled probabilities: ``fit`` fits the temperature on the reference
(``zeal_core.estimate.calibration``) before the subclass's own fitting, and reports ECE before and after.

Intervals: a percentile bootstrap (``bootstrap`` replicates, seeded, at ``level``). Replicate b resamples
the sample's items and pairs them with resample b of the reference's items, on which the estimator's
reference quantities (threshold, reference accuracy and confidence, class shares) were refitted at fit time;
the temperature stays fixed. The interval thus says how much the estimate would move with another draw of n
items from the same stream and another reference of the same size: it is an interval for the stream's
accuracy, not for an estimator's bias under a shift it misjudges. Estimators fitted on shifts widen it by
the error they showed on shifts they were not fitted on (see ``widen_interval``) and say so in ``details``.
Estimators register by name, like timm's ``register_model``/``create_model``.
"""

from __future__ import annotations

import abc
import inspect
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from zeal_core.drift.base import single_threaded_blas
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.estimate.calibration import Calibration
from zeal_core.jsonable import to_jsonable
from zeal_core.plugins import Registry
from zeal_core.validate import check_int, check_open_unit

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet

DEFAULT_LEVEL = 0.9  # two-sided coverage of the reported interval
DEFAULT_BOOTSTRAP = 500  # bootstrap replicates (an interval end moves by ~0.3 points between seeds)
MIN_REFERENCE = 10  # fewest labelled reference items an estimator is fitted on
REFERENCE_SEED_OFFSET = 1_000_003  # reference resamples draw from seed + offset (independent of the sample's)


@dataclass(frozen=True)
class AccuracyEstimate:
    """An estimated accuracy (share of correct predictions, in [0, 1]) for one unlabelled sample."""

    estimator: str  # registry name, e.g. "atc-mc"
    accuracy: float  # the point estimate
    low: float  # lower end of the interval (low <= accuracy)
    high: float  # upper end of the interval (accuracy <= high)
    level: float  # the interval's two-sided coverage, e.g. 0.9
    n: int  # items in the sample
    details: dict[str, Any] = field(default_factory=dict)  # estimator-specific extras, JSON-ready

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (numpy scalars and arrays turned into Python numbers and lists)."""
        return to_jsonable(asdict(self))


@dataclass(frozen=True)
class EstimatorInfo:
    """What a selectbox or ``--help`` shows about an estimator."""

    name: str  # registry name
    description: str  # one line
    needs_bank: bool  # True: fit() needs a shift bank built from the reference images
    views: tuple[str, ...]  # Embeddings.extra entries the estimator reads (computed by zeal_core.estimate)


def check_level(level: Any) -> float:
    """``level`` as a float in (0, 1), else ConfigError."""
    return check_open_unit(level, "level", "0.9")


def check_replicates(value: Any) -> int:
    """Bootstrap replicates as an int >= 1 (100 or more for a usable interval), else ConfigError."""
    return check_int(value, "bootstrap", 1, 100_000)


def logits_of(embeddings: Embeddings) -> np.ndarray:
    """The raw logits (float64), or log-probabilities when an older Embeddings has none (same softmax)."""
    if embeddings.logits is not None:
        return np.asarray(embeddings.logits, dtype=np.float64)
    return np.log(np.clip(np.asarray(embeddings.probs, dtype=np.float64), 1e-300, 1.0))


def bootstrap_rows(n: int, replicates: int, seed: int) -> np.ndarray:
    """``replicates`` x ``n`` row numbers drawn with replacement (one bootstrap resample per row)."""
    return np.random.default_rng(seed).integers(0, n, size=(replicates, n))


def percentile_interval(point: float, replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` share of bootstrap replicates, stretched to contain ``point``."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [tail, 1.0 - tail])
    return float(min(low, point)), float(max(high, point))


def widen_interval(point: float, low: float, high: float, spread: float, level: float) -> tuple[float, float]:
    """Add an estimator's own error to a sampling interval, in quadrature, and clip to [0, 1].

    Each half-width h becomes sqrt(h^2 + (z * spread)^2), z the normal quantile of the level (1.645 at
    0.9): the interval then covers sampling noise plus a fit error of standard deviation ``spread``
    (e.g. the residuals of a leave-one-corruption-out fit).
    """
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    extra = (z * float(spread)) ** 2
    new_low = point - float(np.sqrt((point - low) ** 2 + extra))
    new_high = point + float(np.sqrt((high - point) ** 2 + extra))
    return max(0.0, new_low), min(1.0, new_high)


class AccuracyEstimator(abc.ABC):
    """Base class: subclasses set ``name``, ``description`` and implement ``_fit`` and ``_estimate``.

    ``fit`` checks the reference (labels and logits needed), fits the temperature (``self.calibration``)
    and calls ``_fit``; ``estimate`` checks the sample, strips its labels and calls ``_estimate``. An
    estimate is deterministic for a given ``seed`` (each call starts its generator afresh).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_bank: ClassVar[bool] = False  # fit() requires a shift bank
    views: ClassVar[tuple[str, ...]] = ()  # Embeddings.extra entries read from reference and sample

    def __init__(self, level: float = DEFAULT_LEVEL, bootstrap: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0) -> None:
        """Args:
        level: Two-sided coverage of the interval, in (0, 1).
        bootstrap: Bootstrap replicates for the interval.
        seed: Seeds the bootstrap.
        """
        self.level = check_level(level)
        self.bootstrap = check_replicates(bootstrap)
        self.seed = int(seed)
        self.calibration: Calibration | None = None
        self.reference_accuracy = float("nan")
        self.num_classes = 0
        self.fit_details: dict[str, Any] = {}

    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self.calibration is not None

    def fit(self, reference: Embeddings, bank: Sequence[ShiftedSet] | None = None) -> AccuracyEstimator:
        """Fit on the labelled clean reference (and the shift bank when ``needs_bank``); returns self.

        Args:
            reference: Clean held-out Embeddings with labels and logits.
            bank: ``build_shift_bank`` output made from the same reference images (required only when
                ``needs_bank``; others ignore it).

        Raises:
            ConfigError: No labels, too few items, labels outside the model's classes, a missing view, or
                no bank for an estimator that needs one.
        """
        start = time.perf_counter()
        labels = self._check_reference(reference)
        if self.needs_bank and not bank:
            raise ConfigError(f"estimator {self.name!r} is fitted on synthetic shifts: pass bank="
                              f"zeal_core.shifts.build_shift_bank(...) built from the reference images")
        self.num_classes = int(reference.probs.shape[1])
        calibration = Calibration.fit(logits_of(reference), labels)
        self.reference_accuracy = float((reference.preds == labels).mean())
        self.calibration = calibration
        try:
            with single_threaded_blas():
                self._fit(reference, list(bank) if bank else [])
        except BaseException:
            self.calibration = None
            raise
        self.fit_details = {"reference_n": len(reference), "reference_accuracy": self.reference_accuracy,
                            **calibration.to_dict(), **self.fit_details,
                            "fit_seconds": time.perf_counter() - start}
        return self

    def estimate(self, sample: Embeddings) -> AccuracyEstimate:
        """Estimated accuracy of the model on ``sample`` (its labels, if any, are never read).

        Raises:
            ConfigError: Not fitted, an empty sample, a different number of classes, or a missing view.
        """
        if not self.is_fitted:
            raise ConfigError(f"estimator {self.name!r} is not fitted: call fit(reference) first")
        if not isinstance(sample, Embeddings) or len(sample) < 1:
            raise ConfigError("the sample must be Embeddings with at least one item")
        if sample.probs.shape[1] != self.num_classes:
            raise ConfigError(f"the sample has {sample.probs.shape[1]} classes but estimator {self.name!r} "
                              f"was fitted for {self.num_classes}: use the same model for both")
        self._check_views(sample, "sample")
        start = time.perf_counter()
        with single_threaded_blas():  # small matrices: BLAS threads only spin (see drift.base)
            accuracy, low, high, details = self._estimate(sample.without_labels())
        accuracy = float(np.clip(accuracy, 0.0, 1.0))
        low = float(np.clip(min(low, accuracy), 0.0, 1.0))
        high = float(np.clip(max(high, accuracy), 0.0, 1.0))
        return AccuracyEstimate(estimator=self.name, accuracy=accuracy, low=low, high=high, level=self.level,
                                n=len(sample), details={**details, "bootstrap": self.bootstrap,
                                                        "runtime_s": time.perf_counter() - start,
                                                        "fit": self.fit_details})

    def calibrated_probs(self, embeddings: Embeddings) -> np.ndarray:
        """Temperature-scaled probabilities of ``embeddings`` (float64, N x C)."""
        assert self.calibration is not None
        return self.calibration.probs(logits_of(embeddings))

    def reference_rows(self, n: int) -> np.ndarray:
        """``bootstrap`` x n resamples of the reference's rows, for refitting per replicate (seeded)."""
        return bootstrap_rows(n, self.bootstrap, self.seed + REFERENCE_SEED_OFFSET)

    def sample_rows(self, n: int) -> np.ndarray:
        """``bootstrap`` x n resamples of a sample's rows (seeded; the same for every call)."""
        return bootstrap_rows(n, self.bootstrap, self.seed)

    def interval(self, point: float, replicates: np.ndarray) -> tuple[float, float]:
        """Percentile interval at ``self.level`` of the replicates, stretched to contain ``point``."""
        return percentile_interval(point, replicates, self.level)

    def _check_reference(self, reference: Embeddings) -> np.ndarray:
        if not isinstance(reference, Embeddings):
            raise ConfigError(f"the reference must be Embeddings, got {type(reference).__name__}")
        if reference.labels is None:
            raise ConfigError(f"estimator {self.name!r} is fitted on a labelled reference: the reference "
                              "Embeddings have no labels")
        if len(reference) < MIN_REFERENCE:
            raise ConfigError(f"the reference has {len(reference)} items; fit on at least {MIN_REFERENCE}")
        self._check_views(reference, "reference")
        return np.asarray(reference.labels, dtype=np.int64)

    def _check_views(self, embeddings: Embeddings, what: str) -> None:
        missing = [view for view in self.views if view not in embeddings.extra]
        if missing:
            raise ConfigError(f"estimator {self.name!r} reads Embeddings.extra[{missing[0]!r}], which the "
                              f"{what} lacks: compute it with zeal_core.estimate.views.compute_view")

    @abc.abstractmethod
    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        """Fit what estimates need from the labelled reference (``self.calibration`` is already set)."""

    @abc.abstractmethod
    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
        """Return (accuracy, low, high, details) for an unlabelled sample."""


_REGISTRY: Registry[type[AccuracyEstimator]] = Registry("estimator")


def register_estimator(cls: type[AccuracyEstimator]) -> type[AccuracyEstimator]:
    """Class decorator: add an estimator to the registry under ``cls.name``."""
    if not cls.name or not cls.description:
        raise TypeError(f"{cls.__name__} needs a name and a description")
    return _REGISTRY.add(cls.name, cls)


def list_estimators() -> list[str]:
    """Names of all registered estimators, in registration order."""
    return _REGISTRY.names()


def estimator_info(name: str) -> EstimatorInfo:
    """Description, bank need and views of a registered estimator.

    Raises:
        ConfigError: Unknown name (the message lists the known ones).
    """
    cls = _REGISTRY.get(name)
    return EstimatorInfo(name=cls.name, description=cls.description, needs_bank=cls.needs_bank,
                         views=tuple(cls.views))


def create_estimator(name: str, **options: Any) -> AccuracyEstimator:
    """Build an unfitted estimator by name.

    Args:
        name: A name from ``list_estimators()``.
        **options: ``level``, ``bootstrap``, ``seed`` and estimator-specific options (docs/estimation.md).

    Raises:
        ConfigError: Unknown name (the message lists the known ones) or an unknown or invalid option.
    """
    cls = _REGISTRY.get(name)
    known = [key for key in inspect.signature(cls.__init__).parameters if key != "self"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for estimator {name!r}: use {', '.join(known)}")
    try:
        return cls(**options)
    except TypeError as error:
        raise ConfigError(f"invalid option for estimator {name!r}: {error}") from None

