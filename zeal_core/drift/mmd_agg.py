"""MMDAgg (Schrab, Kim, Albert, Laurent, Guedj & Gretton, JMLR 2023): one MMD test per kernel, aggregated.

**Single tests.** For each kernel k of the collection (Gaussian and Laplace, ``num_bandwidths`` bandwidths
each, see ``zeal_core.drift.aggregated``) the statistic is the unbiased MMD² U-statistic T_k, and its
permutation p-value is p_k = #{i : T_k,i ≥ T_k,0} / (B+1) over the observed split (i = 0) and B random
re-splits shared by every kernel.

**Aggregation (MMDAgg with uniform weights).** MMDAgg rejects when some single test rejects at a corrected
level: T_k > q_k(1 - u·w_k), the permutation quantile at level u·w_k, with weights w_k = 1/K and the
correction u chosen (the paper: by bisection, on a second, independent set of B₂ permutations) as the
largest u whose family-wise rejection rate over permuted splits stays ≤ α. With uniform weights "some T_k
exceeds its (1 - u/K) quantile" is "min_k p_k ≤ u/K", so the test is the min-P test of Westfall & Young:

    t_j = min_k p_k,j for every split j (observed and permuted, each ranked against the same B + 1 values),
    p = #{j : t_j ≤ t_0} / (B + 1) = (b + 1) / (B + 1),   b = #{permuted j : t_j ≤ t_0}.

The B + 1 splits are exchangeable under no drift and each t_j is the same symmetric function of its split
and of the whole set of statistics, so p is an exact permutation p-value (never 0). The reported level
correction is its threshold: s* = the largest t with #{j : t_j ≤ t} < α (B + 1), so ``is_drift`` is exactly
"some single test has p_k ≤ s*", and u = K·s* (MMDAgg's u_α: each single test runs at level u·w_k = u/K;
u = α is Bonferroni, u = K·α no correction at all, for kernels so alike that they always agree).

**Where this deviates from the paper, and why.** (1) One set of B permutations serves both the per-kernel
quantiles and the level correction (MMDAgg draws B₁ = 2000 and B₂ = 2000 separate ones): this halves the
cost, and ranking every split against the same B + 1 values keeps the test exact (the classical single-step
min-P algorithm). (2) The bisection over u (B₃ = 50 steps in the paper) is replaced by its limit, read
directly off the sorted t_j. (3) The bandwidths come from the pooled sample, not from reference-vs-sample
distances as in the reference code: a function of the pool keeps the permutation test exact. (4) The
Laplace kernel is the Euclidean exponential kernel exp(-‖a-b‖/σ) instead of the L1 one (speed: see
``zeal_core.drift.kernels``), on a geometric grid from q05/4 to 2·q95 of the pooled distances (the paper:
min/2 to 2·max of reference-vs-sample distances), 5 bandwidths per kind instead of 10.

``statistic`` is t_0, the smallest single-test p-value (small = drift). ``details``: per kernel ``kernels``,
``bandwidths``, ``mmd2``, ``p_values``; ``rejecting_kernels`` (the single tests at p_k ≤ s*),
``best_kernel`` (the smallest p_k, ties broken by the larger MMD²), ``per_kernel_level`` (s*),
``level_correction_u`` (u). The effect size is sqrt(max(MMD², 0)) of the best kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from zeal_core.drift.aggregated import AggregatedMMDDetector, per_kernel_p_values
from zeal_core.drift.base import register_detector


def min_p_test(mmd2: np.ndarray, alpha: float) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(aggregated p-value, min-P value of every split, per-kernel p-values of the observed split, s*).

    Args:
        mmd2: K x (B+1) statistics, column 0 the observed split.
        alpha: Level used for the threshold s*.
    """
    p_values = per_kernel_p_values(mmd2)
    smallest = p_values.min(axis=0)
    count = smallest.size
    p_value = float((smallest <= smallest[0]).sum()) / count
    ordered = np.sort(smallest)
    at_or_below = np.searchsorted(ordered, ordered, side="right")  # #{j : t_j <= t} for each sorted t
    allowed = ordered[at_or_below < alpha * count]
    threshold = float(allowed.max()) if allowed.size else 0.0
    return p_value, smallest, p_values[:, 0], threshold


@register_detector
class MMDAggDetector(AggregatedMMDDetector):
    """MMDAgg with uniform weights: per-kernel permutation tests, family-wise level alpha by min-P."""

    name = "mmd-agg"
    input_kind = "features"
    description = "MMDAgg: MMD permutation tests over Gaussian and Laplace kernels, aggregated by min-P"
    reading = ("runs the feature-cloud comparison at ten kernel widths and keeps the strongest, "
               "corrected for trying ten; drift: the features moved at some scale")

    def _test(self, sample: np.ndarray) -> tuple[float, float, float, dict[str, Any]]:
        table = self.kernel_table(sample)
        p_value, smallest, observed_p, threshold = min_p_test(table.mmd2, self.alpha)
        # best kernel: smallest single-test p-value, ties broken by the larger MMD²
        best = int(np.lexsort((-table.mmd2[:, 0], observed_p))[0])
        rejecting = [table.kernels[k].label for k in range(len(table.kernels)) if observed_p[k] <= threshold]
        return float(smallest[0]), p_value, math.sqrt(max(float(table.mmd2[best, 0]), 0.0)), {
            **self.common_details(table),
            "p_values": [float(f"{value:.4g}") for value in observed_p],
            "best_kernel": table.kernels[best].label,
            "rejecting_kernels": rejecting,
            "per_kernel_level": threshold,
            "level_correction_u": threshold * len(table.kernels),
            "permutations_as_extreme": int((smallest[1:] <= smallest[0]).sum()),
        }
