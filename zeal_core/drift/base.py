"""What every batch drift detector shares: the result type, input checks, the base class and the registry.

A detector is fitted once on a reference set and then tests any number of samples against it. Inputs are
2-D arrays (rows are items): penultimate-layer features for ``input_kind == "features"`` detectors, softmax
outputs for ``input_kind == "probs"`` detectors. Detectors register themselves by name, like timm's
``register_model``/``create_model``.
"""

from __future__ import annotations

import abc
import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from zeal_core.errors import ConfigError
from zeal_core.jsonable import to_jsonable
from zeal_core.plugins import Registry
from zeal_core.validate import as_matrix, check_alpha

# Kinds of input a detector reads from an ``Embeddings`` object.
INPUT_KINDS = ("features", "probs")


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one two-sample test."""

    detector: str  # registry name of the detector, e.g. "mmd"
    statistic: float  # the test statistic (its meaning depends on the detector; see docs/detectors.md)
    p_value: float  # in (0, 1]; small means the sample is unlikely to come from the reference distribution
    is_drift: bool  # p_value < alpha
    effect_size: float  # how large the difference is, on a detector-specific scale (docs/detectors.md)
    runtime_s: float  # seconds spent in ``test`` (wall clock)
    details: dict[str, Any] = field(default_factory=dict)  # detector-specific extras, JSON-ready

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (numpy scalars and arrays turned into Python numbers and lists)."""
        return to_jsonable(asdict(self))


_BLAS_CONTROLLER: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run numpy/scipy/sklearn BLAS calls on one thread inside the block.

    Detector matrices are small (hundreds to a few thousand rows x <= 512 columns), so BLAS threads gain
    little; on a shared CPU OpenBLAS's spinning threads made a 225 x 512 PCA take 8 s instead of 0.15 s.
    Torch (MMD) keeps its own thread pool. The controller is built once (building one per call costs ~20 ms).
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield


class DriftDetector(abc.ABC):
    """Base class: subclasses set ``name``, ``input_kind``, ``description`` and implement ``_fit``/``_test``.

    ``fit`` keeps a private read-only copy of the reference, so neither the caller nor ``test`` can change it.
    ``test`` is deterministic for a given ``seed`` (each call starts its random generator afresh).
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[str] = "features"
    description: ClassVar[str] = ""
    # Plain-language reading for people: what it compares, and what "drift" from it means.
    reading: ClassVar[str] = ""

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        """Args:
        alpha: Significance level: ``is_drift`` is ``p_value < alpha``.
        seed: Seed for permutations, PCA and cross-validation splits.
        """
        self.alpha = check_alpha(alpha)
        self.seed = int(seed)
        self._reference: np.ndarray | None = None

    @property
    def reference(self) -> np.ndarray:
        """The fitted reference (read-only)."""
        if self._reference is None:
            raise ConfigError(f"detector {self.name!r} is not fitted: call fit(reference) first")
        return self._reference

    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self._reference is not None

    def fit(self, reference: Any) -> DriftDetector:
        """Remember the reference set (a read-only copy) and precompute what tests need; returns self."""
        array = as_matrix(reference, "reference")
        array.setflags(write=False)
        with single_threaded_blas():
            self._fit(array)
        self._reference = array
        return self

    def test(self, sample: Any) -> DriftResult:
        """Test whether ``sample`` comes from the reference distribution.

        Raises:
            ConfigError: Not fitted, or the sample's shape or values are unusable.
        """
        reference = self.reference
        array = as_matrix(sample, "sample")
        if array.shape[1] != reference.shape[1]:
            raise ConfigError(
                f"sample has {array.shape[1]} dims but the reference of detector {self.name!r} has "
                f"{reference.shape[1]}: use the same model and input kind ({self.input_kind}) for both"
            )
        array.setflags(write=False)
        start = time.perf_counter()
        with single_threaded_blas():
            statistic, p_value, effect_size, details = self._test(array)
        runtime = time.perf_counter() - start
        p_value = float(min(max(p_value, 0.0), 1.0))
        return DriftResult(
            detector=self.name,
            statistic=float(statistic),
            p_value=p_value,
            is_drift=bool(p_value < self.alpha),
            effect_size=float(effect_size),
            runtime_s=runtime,
            details={"n_reference": int(reference.shape[0]), "n_sample": int(array.shape[0]),
                     "alpha": self.alpha, **details},
        )

    @abc.abstractmethod
    def _fit(self, reference: np.ndarray) -> None:
        """Precompute from the (read-only) reference."""

    @abc.abstractmethod
    def _test(self, sample: np.ndarray) -> tuple[float, float, float, dict[str, Any]]:
        """Return (statistic, p_value, effect_size, details) for a checked, read-only sample."""


@dataclass(frozen=True)
class DetectorInfo:
    """What a selectbox or ``--help`` shows about a detector."""

    name: str  # registry name
    input_kind: str  # "features" or "probs"
    description: str  # one line, technical
    reading: str  # one line, plain language: what it compares and what a "drift" verdict means


_REGISTRY: Registry[type[DriftDetector]] = Registry("detector")


def register_detector(cls: type[DriftDetector]) -> type[DriftDetector]:
    """Class decorator: add a detector to the registry under ``cls.name``."""
    if not cls.name or cls.input_kind not in INPUT_KINDS:
        raise TypeError(f"{cls.__name__} needs a name and an input_kind in {INPUT_KINDS}")
    return _REGISTRY.add(cls.name, cls)


def list_detectors() -> list[str]:
    """Names of all registered detectors, in registration order."""
    return _REGISTRY.names()


def detector_info(name: str) -> DetectorInfo:
    """One-line description and input kind of a registered detector."""
    cls = _REGISTRY.get(name)
    return DetectorInfo(name=cls.name, input_kind=cls.input_kind, description=cls.description,
                        reading=cls.reading or cls.description)


def parse_detector_names(text: str) -> list[str]:
    """``"all"`` or ``"a,b"`` (the command lines' ``--detector``) -> registered names, in the order given.

    Raises:
        ConfigError: An unknown name (the message lists the known ones), or no name at all.
    """
    if text.strip() == "all":
        return list_detectors()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"no detector named in {text!r}: use 'all' or e.g. 'mmd,bbsd'")
    for name in names:
        _REGISTRY.get(name)  # raises with the list of known names
    return names


def create_detector(name: str, alpha: float = 0.05, **options: Any) -> DriftDetector:
    """Build an unfitted detector by name.

    Args:
        name: A name from ``list_detectors()``.
        alpha: Significance level.
        **options: Detector-specific options (see docs/detectors.md), e.g. ``num_permutations`` for mmd.

    Raises:
        ConfigError: Unknown name (the message lists the known ones) or an unknown or invalid option.
    """
    cls = _REGISTRY.get(name)
    try:
        return cls(alpha=alpha, **options)
    except TypeError as error:
        raise ConfigError(f"invalid option for detector {name!r}: {error}") from None


def p_value_floor(result: DriftResult) -> float:
    """The smallest p-value the test behind ``result`` can give: 1 / (B + 1) for a permutation test with B
    permutations, 0 for tests with a continuous null distribution. A p-value at its floor means "at least
    this strong", not "exactly this"."""
    permutations = result.details.get("num_permutations")
    return 1.0 / (int(permutations) + 1) if isinstance(permutations, int) and permutations > 0 else 0.0


def bonferroni_p_value(p_values: Sequence[float] | np.ndarray) -> float:
    """Bonferroni-combined p-value of several tests: min(1, k * min p). The one place this rule is written:
    the per-feature tests combine their features' p-values with it, and a check's ``Decision`` its
    detectors'."""
    return float(min(1.0, len(p_values) * float(np.min(p_values))))


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``function`` and return (its result, seconds taken)."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def finite_or_nan(value: float) -> float:
    """``value`` if finite, else NaN (for statistics that can overflow)."""
    return value if math.isfinite(value) else float("nan")
