"""What every drift diagnoser shares: the result types, the base class and the registry.

A diagnoser answers "what kind of drift is this?" for a sample that a detector (or the diagnoser itself)
finds drifted. It is fitted once on a labelled, clean reference set and on a shift bank built from the same
reference images (``zeal_core.shifts.build_shift_bank``), then diagnoses any number of samples. The sample's
labels are never used: ``Diagnoser.diagnose`` strips them before the method sees the sample. Diagnosers
register by name, like timm's ``register_model``/``create_model`` and the drift detectors.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from zeal_core.errors import ConfigError
from zeal_core.jsonable import to_jsonable
from zeal_core.plugins import Registry

if TYPE_CHECKING:
    from zeal_core.embed import Embeddings
    from zeal_core.shifts import ShiftedSet

# Cause kinds that are not corruption names.
NO_DRIFT = "no_drift"
LABEL_SHIFT = "label_shift"
UNKNOWN = "unknown"
# Verdicts a Diagnosis can carry.
VERDICTS = ("no drift", "covariate shift", "label shift", "unknown shift")
# Families of the non-corruption causes (corruptions carry their registry family: noise, blur, ...).
FAMILY_OF = {NO_DRIFT: "none", LABEL_SHIFT: "label", UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Cause:
    """One candidate explanation of a sample, with how strongly the evidence supports it."""

    kind: str  # a registered corruption name, "label_shift", "no_drift" or "unknown"
    family: str  # the corruption's family ("noise", "blur", ...), "label", "none" or "unknown"
    score: float  # in [0, 1]; its meaning is the diagnoser's (signature: calibrated posterior over causes)
    severity: float | None = None  # estimated continuous severity (0-5 scale) of a corruption, else None
    details: dict[str, Any] = field(default_factory=dict)  # method-specific extras, JSON-ready

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return to_jsonable(asdict(self), nan_to_none=True)


@dataclass(frozen=True)
class Diagnosis:
    """The ranked causes of one sample and the verdict drawn from them."""

    causes: tuple[Cause, ...]  # ranked, best first
    verdict: str  # one of VERDICTS
    estimated_class_proportions: dict[int, float] | None  # class index -> estimated share in the sample
    reference_class_proportions: dict[int, float] | None  # class index -> share in the reference
    details: dict[str, Any] = field(default_factory=dict)  # statistics, thresholds, per-image scores, timing

    def top(self, k: int = 1) -> tuple[Cause, ...]:
        """The ``k`` best-ranked causes."""
        if k < 1:
            raise ConfigError(f"top(k) needs k >= 1, got {k}")
        return self.causes[:k]

    @property
    def best(self) -> Cause:
        """The best-ranked cause."""
        return self.causes[0]

    def cause(self, kind: str) -> Cause | None:
        """The cause of that kind, or None when it is not among the candidates."""
        return next((cause for cause in self.causes if cause.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (numpy values become Python numbers, NaN becomes None)."""
        return to_jsonable(asdict(self), nan_to_none=True)


@dataclass(frozen=True)
class DiagnoserInfo:
    """What a selectbox or ``--help`` shows about a diagnoser."""

    name: str  # registry name
    description: str  # one line


class Diagnoser(abc.ABC):
    """Base class: subclasses set ``name`` and ``description`` and implement ``_fit``/``_diagnose``.

    ``fit`` checks that the bank was built from the reference images (same count and labels, in order).
    ``diagnose`` strips the sample's labels, checks its shape against the reference, and times the call
    (``details["runtime_s"]``). A ``drift_detected`` of False (the caller's detectors found no drift) always
    gives the verdict "no drift"; True means the verdict is one of the drift verdicts; None lets the
    diagnoser's own calibrated gate decide.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self._fitted = False
        self._feature_dims = 0
        self._num_classes = 0

    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self._fitted

    def fit(self, reference: Embeddings, bank: Sequence[ShiftedSet], *, seed: int = 0) -> Diagnoser:
        """Learn the signatures of the bank's shifts relative to the clean reference; returns self.

        Args:
            reference: Clean held-out images with labels (never the images later diagnosed).
            bank: ``build_shift_bank`` output from the same reference images, in the same order.
            seed: Seeds the calibration's random subsets.

        Raises:
            ConfigError: The reference has no labels or too few rows, the bank is empty, or a bank set does
                not match the reference images.
        """
        check_reference(reference)
        check_bank(reference, bank)
        self._fit(reference, tuple(bank), int(seed))
        self._feature_dims = int(reference.features.shape[1])
        self._num_classes = int(reference.probs.shape[1])
        self._fitted = True
        return self

    def diagnose(self, sample: Embeddings, *, drift_detected: bool | None = None) -> Diagnosis:
        """Rank the candidate causes of ``sample``'s drift (its labels are never looked at).

        Args:
            sample: Embeddings of the images to diagnose, from the same model as the reference.
            drift_detected: The caller's detector decision: False forces "no drift", True a drift verdict,
                None leaves the decision to the diagnoser's own gate.

        Raises:
            ConfigError: Not fitted, or the sample has another feature or class count than the reference,
                fewer than 2 rows, or NaN/inf values.
        """
        if not self._fitted:
            raise ConfigError(f"diagnoser {self.name!r} is not fitted: call fit(reference, bank) first")
        if drift_detected is not None and not isinstance(drift_detected, (bool, np.bool_)):
            raise ConfigError(f"drift_detected must be True, False or None, got {drift_detected!r}")
        unlabelled = sample.without_labels()
        self._check_sample(unlabelled)
        start = time.perf_counter()
        diagnosis = self._diagnose(unlabelled, None if drift_detected is None else bool(drift_detected))
        details = {**diagnosis.details, "diagnoser": self.name, "n": len(unlabelled),
                   "drift_detected": drift_detected, "runtime_s": time.perf_counter() - start}
        return replace(diagnosis, details=details)

    def _check_sample(self, sample: Embeddings) -> None:
        if len(sample) < 2:
            raise ConfigError(f"a diagnosis needs a sample of at least 2 images, got {len(sample)}")
        if sample.features.shape[1] != self._feature_dims or sample.probs.shape[1] != self._num_classes:
            raise ConfigError(
                f"sample has {sample.features.shape[1]} features and {sample.probs.shape[1]} classes, the "
                f"reference {self._feature_dims} and {self._num_classes}: embed both with the same model")
        if not (np.isfinite(sample.features).all() and np.isfinite(sample.probs).all()):
            raise ConfigError("sample features or probabilities hold NaN or inf: drop or fix those images")

    @abc.abstractmethod
    def _fit(self, reference: Embeddings, bank: tuple[ShiftedSet, ...], seed: int) -> None:
        """Fit on a checked reference and bank."""

    @abc.abstractmethod
    def _diagnose(self, sample: Embeddings, drift_detected: bool | None) -> Diagnosis:
        """Diagnose a checked, unlabelled sample."""


def check_reference(reference: Embeddings, min_rows: int = 20) -> None:
    """Raise ConfigError unless ``reference`` is labelled, finite and has at least ``min_rows`` rows."""
    if reference.labels is None:
        raise ConfigError("the diagnosis reference needs true labels (its confusion matrix is part of the "
                          "label-shift estimate): embed the reference with labels=...")
    if len(reference) < min_rows:
        raise ConfigError(f"the diagnosis reference has {len(reference)} images; use at least {min_rows} "
                          "(200-500 give usable signatures)")
    if not (np.isfinite(reference.features).all() and np.isfinite(reference.probs).all()):
        raise ConfigError("reference features or probabilities hold NaN or inf: drop or fix those images")
    classes = reference.probs.shape[1]
    if reference.labels.min() < 0 or reference.labels.max() >= classes:
        raise ConfigError(f"reference labels must be model outputs 0..{classes - 1} (map dataset labels "
                          "with zeal_core.models.registry.label_map and drop unseen classes)")


def check_bank(reference: Embeddings, bank: Sequence[ShiftedSet]) -> None:
    """Raise ConfigError unless every bank set holds the reference images (same count, labels, dims)."""
    if not bank:
        raise ConfigError("the shift bank is empty: build it with zeal_core.shifts.build_shift_bank")
    seen = set()
    for shifted in bank:
        embedded = shifted.embeddings
        key = (shifted.corruption, shifted.severity)
        if key in seen:
            raise ConfigError(f"the shift bank holds {shifted.spec.text} twice: keep one set per "
                              "corruption and severity")
        seen.add(key)
        if (len(embedded) != len(reference) or embedded.features.shape[1] != reference.features.shape[1]
                or embedded.probs.shape[1] != reference.probs.shape[1]):
            raise ConfigError(f"bank set {shifted.spec.text} has {len(embedded)} x "
                              f"{embedded.features.shape[1]} features, the reference {len(reference)} x "
                              f"{reference.features.shape[1]}: build the bank from the reference images")
        if embedded.labels is None or not np.array_equal(embedded.labels, reference.labels):
            raise ConfigError(f"bank set {shifted.spec.text} does not carry the reference labels in order: "
                              "build the bank from the reference images and labels, in the same order")
        if shifted.severity <= 0:
            raise ConfigError(f"bank set {shifted.spec.text} is clean: the bank holds shifted sets only")


_REGISTRY: Registry[type[Diagnoser]] = Registry("diagnoser")


def register_diagnoser(cls: type[Diagnoser]) -> type[Diagnoser]:
    """Class decorator: add a diagnoser to the registry under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    return _REGISTRY.add(cls.name, cls)


def list_diagnosers() -> list[str]:
    """Names of all registered diagnosers, in registration order."""
    return _REGISTRY.names()


def diagnoser_info(name: str) -> DiagnoserInfo:
    """One-line description of a registered diagnoser."""
    cls = _REGISTRY.get(name)
    return DiagnoserInfo(name=cls.name, description=cls.description)


def create_diagnoser(name: str = "signature", **options: Any) -> Diagnoser:
    """Build an unfitted diagnoser by name.

    Args:
        name: A name from ``list_diagnosers()``.
        **options: Diagnoser-specific settings (see docs/diagnosis.md), e.g. ``components=32``.

    Raises:
        ConfigError: Unknown name (the message lists the known ones) or an unknown or invalid option.
    """
    cls = _REGISTRY.get(name)
    try:
        return cls(**options)
    except TypeError as error:
        raise ConfigError(f"invalid option for diagnoser {name!r}: {error}") from None
