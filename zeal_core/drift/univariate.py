"""Per-dimension two-sample tests (Kolmogorov-Smirnov, Cramér-von Mises) combined with Bonferroni.

Features are first reduced with PCA (default 32 components), as in Rabanser et al., "Failing Loudly"
(NeurIPS 2019); the reduced dimensions are tested one by one and the smallest p-value is multiplied by the
number of dimensions.

The PCA is fitted on the pooled reference + sample at each test, not on the reference alone. A basis fitted on
the reference alone overfits it (its projections have more variance along the top components than any new
sample's), so clean samples look drifted: on digits that gave false-positive rates of 0.09 at alpha 0.05. A
basis that is a symmetric function of the pool keeps the pooled points exchangeable under no drift, and KS and
CvM depend only on ranks, so their null distributions stay exact.

The PCA is exact (numpy's eigendecomposition of the pooled covariance, or its SVD when there are fewer rows
than dimensions): deterministic, and free of scikit-learn, whose import alone costs a cron check about a
second. A component's sign is arbitrary, and KS and CvM are unchanged by flipping a dimension.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, ClassVar

import numpy as np

from zeal_core.drift.base import DriftDetector, bonferroni_p_value, register_detector
from zeal_core.errors import ConfigError
from zeal_core.validate import check_int


def pooled_pca(pooled: np.ndarray, components: int) -> np.ndarray:
    """The rows of ``pooled`` on its top ``components`` principal axes (exact; float64).

    The axes come from the D x D covariance's eigenvectors (more rows than dimensions) or the SVD (fewer);
    every row is then projected by its own dot products, so identical rows get identical scores: KS and CvM
    count ties, and scores computed another way (e.g. from the N x N Gram matrix) differ by rounding that
    depends on the row's position, which they would read as drift. ks and cvm test the same pool, so the
    last result is kept for the other one.
    """
    key = (hashlib.sha256(np.ascontiguousarray(pooled).tobytes()).hexdigest(), pooled.shape, components)
    with _LAST_LOCK:
        if _LAST_PCA and _LAST_PCA[0] == key:
            return _LAST_PCA[1]
    centred = np.asarray(pooled, dtype=np.float64) - pooled.mean(axis=0)
    rows, dims = centred.shape
    if rows > dims:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, np.argsort(values)[::-1][:components]]
    else:
        axes = np.linalg.svd(centred, full_matrices=False)[2][:components].T
    reduced = centred @ axes
    reduced.setflags(write=False)
    with _LAST_LOCK:
        _LAST_PCA[:] = [key, reduced]
    return reduced


_LAST_PCA: list = []  # [key, reduced] of the last pooled PCA (ks and cvm of one check share it)
_LAST_LOCK = threading.Lock()


def per_dimension_test(test: str, reference: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statistics and p-values of ``test`` ("ks" or "cvm") per column (scipy, vectorised over columns)."""
    from scipy import stats  # imported on first use: a process that never runs ks/cvm/bbsd skips it
    if test == "ks":
        result = stats.ks_2samp(reference, sample, axis=0)
    elif test == "cvm":
        result = stats.cramervonmises_2samp(reference, sample, axis=0)
    else:
        raise ConfigError(f"unknown univariate test {test!r}: use 'ks' or 'cvm'")
    statistics = np.atleast_1d(np.asarray(result.statistic, dtype=np.float64))
    p_values = np.atleast_1d(np.asarray(result.pvalue, dtype=np.float64))
    # A constant column in both sets gives NaN: it carries no evidence of drift.
    return np.nan_to_num(statistics, nan=0.0), np.nan_to_num(p_values, nan=1.0)


class UnivariateDetector(DriftDetector):
    """Shared logic: optional PCA of the pooled reference + sample, then per-dimension tests, Bonferroni."""

    test_name: ClassVar[str] = "ks"

    def __init__(self, alpha: float = 0.05, seed: int = 0, pca_dims: int | None = 32) -> None:
        """Args:
        alpha: Significance level (of the Bonferroni-combined p-value).
        seed: Unused (the PCA is exact); accepted so every detector takes the same options.
        pca_dims: Components kept by the PCA of the pooled data; None or 0 tests the raw dimensions.
        """
        super().__init__(alpha=alpha, seed=seed)
        self.pca_dims = None if not pca_dims else check_int(pca_dims, "pca_dims", 1)
        self._reduced_reference: np.ndarray | None = None

    def _fit(self, reference: np.ndarray) -> None:
        reference = np.array(reference, dtype=np.float64)
        reference.setflags(write=False)
        self._reduced_reference = reference

    def _reduce(self, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Reference and sample projected on a PCA of their pool (or unchanged when PCA is off)."""
        assert self._reduced_reference is not None
        reference = self._reduced_reference
        if self.pca_dims is None or reference.shape[1] <= self.pca_dims:
            return reference, np.asarray(sample, dtype=np.float64), False
        pooled = np.concatenate([reference, sample]).astype(np.float64)
        components = min(self.pca_dims, pooled.shape[0], pooled.shape[1])
        reduced = pooled_pca(pooled, components)
        return reduced[:reference.shape[0]], reduced[reference.shape[0]:], True

    def _test(self, sample: np.ndarray) -> tuple[float, float, float, dict[str, Any]]:
        reduced_reference, reduced, used_pca = self._reduce(sample)
        statistics, p_values = per_dimension_test(self.test_name, reduced_reference, reduced)
        worst = int(np.argmin(p_values))
        return float(statistics[worst]), bonferroni_p_value(p_values), float(statistics.max()), {
            "dims_tested": len(p_values),
            "pca": used_pca,
            "most_drifted_dim": worst,
            "dims_below_alpha": int((p_values < self.alpha / len(p_values)).sum()),
            "p_values": [float(f"{p:.4g}") for p in p_values],  # 4 significant digits
        }


@register_detector
class KSDetector(UnivariateDetector):
    """Kolmogorov-Smirnov per PCA dimension, Bonferroni-combined."""

    name = "ks"
    input_kind = "features"
    description = "Kolmogorov-Smirnov per PCA-reduced feature dimension, Bonferroni-combined"
    reading = ("compares each main direction of the features one at a time (the largest gap between sets); "
               "drift: some direction's values changed")
    test_name = "ks"


@register_detector
class CVMDetector(UnivariateDetector):
    """Cramér-von Mises per PCA dimension, Bonferroni-combined."""

    name = "cvm"
    input_kind = "features"
    description = "Cramér-von Mises per PCA-reduced feature dimension, Bonferroni-combined"
    reading = ("like ks, but weighs the whole spread of each feature direction, not only its largest gap; "
               "drift: some direction changed")
    test_name = "cvm"


@register_detector
class BBSDDetector(UnivariateDetector):
    """Black-box shift detection: KS on each softmax output, Bonferroni-combined (no PCA)."""

    name = "bbsd"
    input_kind = "probs"
    description = "black-box shift detection: KS per softmax class probability, Bonferroni-combined"
    reading = ("compares the model's predicted class probabilities; "
               "drift: the model's answers changed (e.g. another class mix, lost confidence)")
    test_name = "ks"

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        """Args:
        alpha: Significance level.
        seed: Unused (the test is deterministic); accepted so every detector takes the same options.
        """
        super().__init__(alpha=alpha, seed=seed, pca_dims=None)
