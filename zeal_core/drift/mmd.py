"""Maximum Mean Discrepancy with an RBF kernel and a fast, vectorised permutation test (torch, CPU or GPU).

The statistic is the unbiased MMD² estimate of Gretton et al. (2012), the same estimator frouros' ``MMD``
computes. The kernel matrix of the pooled sample Z = [reference; sample] (N = n + m rows) is computed once.
For a split of Z given by an indicator vector u (1 on the rows of one side) and the row sums r = K·1, total
S = 1ᵀK1, every term of the unbiased MMD² is a function of two numbers:

    Q = uᵀKu (sum of K over that side x itself),  L = uᵀr (sum over that side x all)
    sum across the sides = L - Q,    sum over the other side x itself = S - 2L + Q

so B permutations stack their indicators into a B x N matrix U and need one matrix product U·K (B·N² flops,
about 60 % of that as K is symmetric) plus a row-wise dot product. Row 0 of U is the observed split, so the
observed and permuted statistics are computed by exactly the same arithmetic. p = (b + 1) / (B + 1),
b = permutations with a statistic >= observed. The shared pieces (distances, bandwidths, the permutation
engine) live in ``zeal_core.drift.kernels``, which ``mmd-fuse`` and ``mmd-agg`` use too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zeal_core.device import resolve_device
from zeal_core.drift.base import DriftDetector, register_detector
from zeal_core.drift.kernels import (
    MAX_POOLED_ROWS,
    KernelSpec,
    PermutationSplits,
    PooledDistances,
    capped_pool,
    check_max_rows,
    permutation_p_value,
    squared_distances,
)
from zeal_core.errors import ConfigError
from zeal_core.validate import check_int

__all__ = ["MMDDetector", "median_bandwidth", "mmd2_unbiased", "permutation_mmd2", "rbf_kernel_matrix",
           "split_mmd2", "squared_distances"]


def median_bandwidth(pooled: torch.Tensor, seed: int = 0) -> float:
    """Median heuristic: sigma = median pairwise Euclidean distance between distinct rows of ``pooled``.

    The kernel is then k(a, b) = exp(-||a - b||² / (2 sigma²)), frouros' ``rbf_kernel`` convention.
    Computed on the pooled reference + sample, which does not change under permutations of the pool, so the
    permutation test stays exact.
    """
    return PooledDistances(pooled, seed).median()


def rbf_kernel_matrix(pooled: torch.Tensor, sigma: float) -> torch.Tensor:
    """K[i, j] = exp(-||z_i - z_j||² / (2 sigma²)) over the pooled rows (N x N)."""
    kernel = squared_distances(pooled, pooled)
    kernel.mul_(-0.5 / sigma**2).exp_()
    kernel.fill_diagonal_(1.0)  # exact diagonal (rounding can leave 1 - 1e-7)
    return kernel


def mmd2_unbiased(kernel: torch.Tensor, n_reference: int) -> float:
    """Unbiased MMD² (float64) of a pooled kernel matrix; its first ``n_reference`` rows are the reference."""
    kernel = kernel.double()
    n, m = n_reference, kernel.shape[0] - n_reference
    k_xx = kernel[:n, :n].sum() - kernel[:n, :n].diagonal().sum()
    k_yy = kernel[n:, n:].sum() - kernel[n:, n:].diagonal().sum()
    k_xy = kernel[:n, n:].sum()
    return float(k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2.0 * k_xy / (n * m))


def split_mmd2(kernel: torch.Tensor, indicators: torch.Tensor, row_sums: torch.Tensor | None = None,
               grand_total: float | None = None) -> torch.Tensor:
    """Unbiased MMD² of every split given by the rows of ``indicators`` (B x N, 1 = reference side).

    Each row must hold the same number n of ones; ``kernel`` must have a unit diagonal. One B x N by N x N
    product; float64 result (B). (The detectors use ``PermutationSplits``, which needs only the symmetric
    half of the product; this direct form is kept as the readable reference.)
    """
    total = kernel.shape[0]
    n = round(float(indicators[0].sum()))
    m = total - n
    if row_sums is None:
        row_sums = kernel.double().sum(1)
    if grand_total is None:
        grand_total = float(row_sums.sum())
    within = ((indicators @ kernel) * indicators).sum(1).double()  # Q = uᵀKu per row
    linear = indicators.double() @ row_sums  # L = uᵀr per row
    k_xx = (within - n) / (n * (n - 1))
    k_yy = (grand_total - 2.0 * linear + within - m) / (m * (m - 1))
    k_xy = (linear - within) / (n * m)
    return k_xx + k_yy - 2.0 * k_xy


def permutation_mmd2(kernel: torch.Tensor, n_reference: int, num_permutations: int,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased MMD² of the observed split and of ``num_permutations`` random re-splits, vectorised.

    Args:
        kernel: N x N symmetric pooled kernel matrix (float32, any device), reference rows first.
        n_reference: Rows of the pool that form the reference (the rest is the sample).
        num_permutations: B, the number of random re-splits.
        seed: Seed for the permutations (a fresh generator per call, so results repeat).

    Returns:
        (observed statistic, B permuted statistics), float64 tensors on the kernel's device.
    """
    splits = PermutationSplits(kernel.shape[0], n_reference, num_permutations, seed, kernel.device)
    values = splits.mmd2(kernel)
    return values[0], values[1:]


@register_detector
class MMDDetector(DriftDetector):
    """MMD two-sample test on features with a permutation p-value."""

    name = "mmd"
    input_kind = "features"
    description = "kernel MMD (RBF, median bandwidth) with a vectorised permutation test"
    reading = ("compares the whole cloud of image features of both sets (all dimensions at once); "
               "drift: the features moved as a whole")

    def __init__(self, alpha: float = 0.05, seed: int = 0, num_permutations: int = 1000,
                 bandwidth: float | str = "median", device: str = "cpu",
                 max_rows: int = MAX_POOLED_ROWS) -> None:
        """Args:
        alpha: Significance level.
        seed: Seed for the permutations (and the row hash that picks bandwidth rows above 2,048 rows).
        num_permutations: B, random re-splits of the pool (p-value resolution 1 / (B + 1)).
        bandwidth: "median" (median heuristic on the pooled sample) or a fixed sigma > 0, feature units.
        device: "cpu", "cuda", "cuda:N" or "auto".
        max_rows: Most pooled rows tested (memory 4·max_rows² bytes per matrix); beyond, seeded subsets.
        """
        super().__init__(alpha=alpha, seed=seed)
        self.max_rows = check_max_rows(max_rows)
        self.num_permutations = check_int(num_permutations, "num_permutations", 1, 1_000_000)
        if isinstance(bandwidth, str):
            if bandwidth != "median":
                raise ConfigError(f"bandwidth must be 'median' or a positive number, got {bandwidth!r}")
        elif not (isinstance(bandwidth, (int, float)) and np.isfinite(bandwidth) and bandwidth > 0):
            raise ConfigError(f"bandwidth must be 'median' or a positive number, got {bandwidth!r}")
        self.bandwidth = bandwidth
        self.device = resolve_device(device)
        self._reference_tensor: torch.Tensor | None = None

    def _fit(self, reference: np.ndarray) -> None:
        # float32 copy on the device, made once per fit; only ever read.
        self._reference_tensor = torch.tensor(reference, dtype=torch.float32, device=self.device)

    def _test(self, sample: np.ndarray) -> tuple[float, float, float, dict[str, Any]]:
        assert self._reference_tensor is not None
        with torch.inference_mode():
            sample_tensor = torch.tensor(sample, dtype=torch.float32, device=self.device)
            pooled, n_reference, subsampled = capped_pool(self._reference_tensor, sample_tensor,
                                                          self.max_rows, self.seed)
            distances = PooledDistances(pooled, self.seed)
            sigma = distances.median() if self.bandwidth == "median" else float(self.bandwidth)
            kernel = distances.kernel(KernelSpec("gaussian", sigma))
            del distances  # the kernel is all the permutations need
            splits = PermutationSplits(len(pooled), n_reference, self.num_permutations, self.seed,
                                       self.device)
            p_value, exceed = permutation_p_value(splits.mmd2(kernel))
            statistic = mmd2_unbiased(kernel, n_reference)
        return statistic, p_value, float(np.sqrt(max(statistic, 0.0))), {
            "sigma": sigma,
            "num_permutations": self.num_permutations,
            "permutations_exceeding": exceed,
            "device": str(self.device),
            **({"subsampled": subsampled} if subsampled else {}),
        }
