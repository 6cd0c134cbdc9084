"""Per-dimension two-sample tests (Kolmogorov-Smirnov, Cramér-von Mises) combined with Bonferroni.

Features are first reduced with a PCA fitted on the reference (default 32 components), as in Rabanser et al.,
"Failing Loudly" (NeurIPS 2019); the reduced dimensions are tested one by one and the smallest p-value is
multiplied by the number of dimensions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA

from zeal_core.drift.base import DriftDetector, bonferroni, check_int, register_detector
from zeal_core.errors import ConfigError


def per_dimension_test(test: str, reference: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statistics and p-values of ``test`` ("ks" or "cvm") per column (scipy, vectorised over columns)."""
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
    """Shared logic: optional PCA on the reference, then a per-dimension test with Bonferroni."""

    test_name: ClassVar[str] = "ks"

    def __init__(self, alpha: float = 0.05, seed: int = 0, pca_dims: int | None = 32) -> None:
        """Args:
        alpha: Significance level (of the Bonferroni-combined p-value).
        seed: Seed for the randomized PCA solver.
        pca_dims: Components kept by a PCA fitted on the reference; None or 0 tests the raw dimensions.
        """
        super().__init__(alpha=alpha, seed=seed)
        self.pca_dims = None if not pca_dims else check_int(pca_dims, "pca_dims", 1)
        self._pca: PCA | None = None
        self._reduced_reference: np.ndarray | None = None

    def _fit(self, reference: np.ndarray) -> None:
        self._pca = None
        reduced = reference
        if self.pca_dims is not None and reference.shape[1] > self.pca_dims:
            components = min(self.pca_dims, reference.shape[0], reference.shape[1])
            self._pca = PCA(n_components=components, random_state=self.seed).fit(reference)
            reduced = self._pca.transform(reference)
        reduced = np.array(reduced, dtype=np.float64)
        reduced.setflags(write=False)
        self._reduced_reference = reduced

    def _test(self, sample: np.ndarray) -> tuple[float, float, float, dict[str, Any]]:
        assert self._reduced_reference is not None
        reduced = self._pca.transform(sample) if self._pca is not None else sample
        statistics, p_values = per_dimension_test(self.test_name, self._reduced_reference, reduced)
        worst = int(np.argmin(p_values))
        return float(statistics[worst]), bonferroni(p_values), float(statistics.max()), {
            "dims_tested": len(p_values),
            "pca": self._pca is not None,
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
    test_name = "ks"


@register_detector
class CVMDetector(UnivariateDetector):
    """Cramér-von Mises per PCA dimension, Bonferroni-combined."""

    name = "cvm"
    input_kind = "features"
    description = "Cramér-von Mises per PCA-reduced feature dimension, Bonferroni-combined"
    test_name = "cvm"


@register_detector
class BBSDDetector(UnivariateDetector):
    """Black-box shift detection: KS on each softmax output, Bonferroni-combined (no PCA)."""

    name = "bbsd"
    input_kind = "probs"
    description = "black-box shift detection: KS per softmax class probability, Bonferroni-combined"
    test_name = "ks"

    def __init__(self, alpha: float = 0.05, seed: int = 0) -> None:
        """Args:
        alpha: Significance level.
        seed: Unused (the test is deterministic); accepted so every detector takes the same options.
        """
        super().__init__(alpha=alpha, seed=seed, pca_dims=None)
