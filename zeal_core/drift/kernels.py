"""What the kernel two-sample tests share: pooled distances, bandwidths, kernel matrices, permutations.

``mmd``, ``mmd-fuse`` and ``mmd-agg`` all work on the pooled sample Z = [reference; sample] (N = n + m rows,
reference first) in four steps, each done once per test:

1. **Distances.** One N x N matrix of squared Euclidean distances, ‖a‖² + ‖b‖² - 2 a·b (a matrix product).
2. **Bandwidths.** Read off the distances of distinct pairs of the pool (the median, or quantiles). They are a
   function of the pool, not of which rows are "reference", so every permutation sees the same kernels and the
   permutation test stays exact. Pools above ``MAX_BANDWIDTH_ROWS`` rows use a subset of rows picked by a
   seeded integer hash of each row's bits: a function of the rows' values, not of their positions, so the
   bandwidths stay a symmetric function of the pool (a subset drawn by position would tie them, slightly, to
   which rows are labelled reference).
3. **Kernels.** Gaussian k(a, b) = exp(-‖a-b‖² / (2σ²)) and Laplace k(a, b) = exp(-‖a-b‖ / σ), both from the
   one distance matrix (Laplace here is the Euclidean "exponential" kernel, Matérn ν = 1/2, not the L1
   product kernel of MMDAgg/MMD-FUSE: L1 distances are no matrix product, and for N = 2,000 rows of 512
   features torch's ``cdist(p=1)`` took 3.6 s, against 0.12 s for the Euclidean matrix).
4. **Permutations.** ``PermutationSplits`` draws B random re-splits of the pool once; every kernel is scored
   on the same splits (row 0 is the observed split, so observed and permuted statistics share one
   arithmetic). A split is stored as the positions of its smaller side (s = min(n, m) rows).

**Memory.** The N x N matrices take 4·N² bytes each (N = 20,000: 1.6 GB, and a test holds two or three at
once), so a test never pools more than ``MAX_POOLED_ROWS`` rows: beyond that each side is cut to a seeded
random subset (``capped_pool``; the sample keeps at least half of the budget), and the details say so. The
permutation test stays exact for the rows it keeps (a random subset of a sample is a sample of the same
distribution); it only gives up the extra power of more than a few thousand rows, which is already ~1.

The unbiased MMD² of a split follows from three sums over a kernel matrix K with its diagonal left out: W
(pairs inside the smaller side), C (pairs across) and V (pairs inside the larger side), with o = N - s,

    MMD² = W / (s(s-1)) + V / (o(o-1)) - 2 C / (s o)      (symmetric in the two sides)

and, for the side's indicator u, row sums r = K·1, trace t_S over the side and total T (all without the
diagonal where it matters): W = uᵀKu - t_S, C = uᵀr - uᵀKu, V = (T - tr K) - W - 2C. Only uᵀKu needs more
than a gather. Two ways to get it for all splits at once:

- **Matrix product** (the default): U·K for the (B+1) x N indicator matrix U. K is symmetric, so its rows and
  columns are cut into b = ``SYMMETRIC_BLOCKS`` blocks and only the blocks on and above the diagonal are
  multiplied (off-diagonal blocks count twice): (b+1)/(2b) of the flops, 62.5 % for b = 4.
- **Gather**, for a small side: sum K over the s x s positions of each split directly, (B+1)·s² reads.
  It is chosen when s² · ``GATHER_COST_RATIO`` < (b+1)/(2b) · N² (a gathered element costs about as much as
  a few hundred multiply-adds of a matrix product on the development CPU), e.g. n = 10 against 2,000 rows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from zeal_core.errors import ConfigError

# Most pooled rows whose pairwise distances set the bandwidths; beyond this a value-hashed subset of rows is
# used (``value_hashed_rows``; 2,048 rows give ~2 million distinct pairs: quantiles that no longer move).
MAX_BANDWIDTH_ROWS = 2048
# Elements of the (B+1) x N indicator block processed at once (float32: ~128 MB per block).
PERMUTATION_BLOCK_ELEMENTS = 32_000_000
# Row/column blocks of the symmetric product U·K (only the upper-triangular blocks are computed).
SYMMETRIC_BLOCKS = 4
# Cost of one gathered kernel element relative to one multiply-add of the matrix product (measured on the
# 2-core development CPU: ~20 ns per gathered element against ~0.05 ns per multiply-add, under load).
GATHER_COST_RATIO = 400
# Elements of gathered kernel values (and their indices) held at once on the gather path.
GATHER_BLOCK_ELEMENTS = 4_000_000
# The kernels the tests can use, in the order the grid lists them.
KERNEL_KINDS = ("gaussian", "laplace")
# Most pooled rows (reference + sample) a kernel test works on: 5,000 rows are 100 MB per N x N float32
# matrix (a test holds up to three at once), whatever size of batch it is given.
MAX_POOLED_ROWS = 5000


def squared_distances(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (‖a‖² + ‖b‖² - 2 a·b, clamped at 0 against rounding)."""
    left_norms = (left * left).sum(1, keepdim=True)
    right_norms = (right * right).sum(1, keepdim=True)
    distances = left_norms + right_norms.T - 2.0 * (left @ right.T)
    return distances.clamp_(min=0.0)


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of a test's collection."""

    kind: str  # "gaussian" or "laplace"
    bandwidth: float  # sigma, in feature units (Euclidean distance)

    @property
    def label(self) -> str:
        """Short text for tables and details, e.g. ``gaussian σ=12.3``."""
        return f"{self.kind} σ={self.bandwidth:.4g}"


def check_kernels(kernels: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Kernel kinds as a tuple (a comma-separated string works too); ConfigError names the known ones."""
    names = tuple(part.strip() for part in kernels.split(",")) if isinstance(kernels, str) else tuple(kernels)
    unknown = [name for name in names if name not in KERNEL_KINDS]
    if not names or unknown or len(set(names)) != len(names):
        raise ConfigError(f"kernels must be distinct names from {', '.join(KERNEL_KINDS)}, got {kernels!r}")
    return names


def value_hashed_rows(pooled: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Positions of ``count`` rows of ``pooled`` chosen by a seeded hash of their values, not their positions.

    Each row's float32 bit patterns are combined with seeded random integer weights in exact int64 arithmetic
    (a position-independent pseudo-random key); the ``count`` smallest keys win. Reordering the rows reorders
    the chosen positions with them, so anything computed from the chosen rows is a symmetric function of
    the pool. Identical rows share a key, and either choice gives the same values.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    weights = torch.randint(1, 2**20, (pooled.shape[1],), generator=generator, dtype=torch.int64)
    bits = pooled.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    # exact integer arithmetic (for very wide rows the int64 sum may wrap around, still a function of values)
    keys = torch.remainder((bits * weights.to(pooled.device)).sum(1), 2_147_483_647)
    return keys.topk(count, largest=False).indices


def capped_pool(reference: torch.Tensor, sample: torch.Tensor, max_rows: int,
                seed: int = 0) -> tuple[torch.Tensor, int, dict[str, int] | None]:
    """``[reference; sample]`` with at most ``max_rows`` rows: each side cut to a seeded random subset.

    The sample keeps ``min(m, max(max_rows - n, max_rows // 2))`` rows and the reference the rest of the
    budget, so a huge batch never crowds out the reference nor the reverse.

    Returns:
        (pooled rows, reference rows among them, None or ``{"reference": (kept, of), "sample": (kept, of)}``
        as counts ``reference_kept``, ``reference_rows``, ``sample_kept``, ``sample_rows``).
    """
    from zeal_core.sampling import seeded_subset

    n, m = int(reference.shape[0]), int(sample.shape[0])
    if n + m <= max_rows:
        return torch.cat([reference, sample]), n, None
    m_kept = min(m, max(max_rows - n, max_rows // 2))
    n_kept = min(n, max_rows - m_kept)
    reference_rows = seeded_subset(n, n_kept, seed).to(reference.device)
    sample_rows = seeded_subset(m, m_kept, seed + 1).to(sample.device)
    pooled = torch.cat([reference.index_select(0, reference_rows), sample.index_select(0, sample_rows)])
    return pooled, n_kept, {"reference_kept": n_kept, "reference_rows": n, "sample_kept": m_kept,
                            "sample_rows": m}


def check_max_rows(value: int) -> int:
    """A pooled-row cap: a whole number of at least 8 (4 rows a side)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise ConfigError(f"max_rows must be a whole number >= 8, got {value!r}")
    return value


class PooledDistances:
    """The squared Euclidean distance matrix of a pooled sample (computed once) and bandwidths read off it."""

    def __init__(self, pooled: torch.Tensor, seed: int = 0) -> None:
        """Args:
        pooled: N x d float tensor, reference rows first (any device).
        seed: Seed of the row hash that picks the bandwidth rows when N > ``MAX_BANDWIDTH_ROWS``.
        """
        self.squared = squared_distances(pooled, pooled)
        self._pooled = pooled
        self.seed = int(seed)
        self._euclidean: torch.Tensor | None = None
        self._pairs: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """N, the pooled rows."""
        return int(self.squared.shape[0])

    @property
    def euclidean(self) -> torch.Tensor:
        """‖a - b‖ (N x N), computed on first use."""
        if self._euclidean is None:
            self._euclidean = self.squared.sqrt()
        return self._euclidean

    def pair_squared(self) -> torch.Tensor:
        """Squared distances of the distinct pairs (i < j) of the pool or of its value-hashed row subset."""
        if self._pairs is None:
            rows = self.squared
            if self.size > MAX_BANDWIDTH_ROWS:
                keep = value_hashed_rows(self._pooled, MAX_BANDWIDTH_ROWS, self.seed)
                rows = rows[keep][:, keep]
            upper = torch.ones_like(rows, dtype=torch.bool).triu_(diagonal=1)
            self._pairs = rows[upper]
        return self._pairs

    def median(self) -> float:
        """Median heuristic: the median distance between distinct rows (the mean if most pairs coincide).

        Returns 1.0 when all rows are identical (any bandwidth then gives MMD = 0).
        """
        pairs = self.pair_squared()
        median_sq = float(pairs.median())
        if median_sq <= 0.0:
            median_sq = float(pairs.mean())
        return math.sqrt(median_sq) if median_sq > 0.0 else 1.0

    def quantile(self, level: float) -> float:
        """The ``level`` quantile of the distances between distinct rows (lower order statistic)."""
        pairs = self.pair_squared()
        rank = 1 + math.floor(level * (pairs.numel() - 1))
        return math.sqrt(max(float(pairs.kthvalue(rank).values), 0.0))

    def bandwidth_grid(self, count: int, quantiles: tuple[float, float] = (0.05, 0.95),
                       factors: tuple[float, float] = (0.5, 2.0)) -> tuple[float, ...]:
        """``count`` bandwidths spaced geometrically from q_low · f_low to q_high · f_high.

        q are quantiles of the distances between distinct pooled rows, f the factors (default: half the 5 %
        quantile to twice the 95 % one, the range MMD-FUSE uses; the aggregated detectors pass their own).
        A single bandwidth is the median heuristic, so a one-kernel collection is the ``mmd`` detector's
        kernel. A zero lower quantile (many duplicate rows) falls back to the smallest positive distance, so
        every bandwidth stays positive.
        """
        if count == 1:
            return (self.median(),)
        low, high = self.quantile(quantiles[0]), self.quantile(quantiles[1])
        if low <= 0.0:
            positive = self.pair_squared()[self.pair_squared() > 0]
            low = math.sqrt(float(positive.min())) if positive.numel() else 1.0
        low, high = low * factors[0], max(high, low) * factors[1]
        ratio = (high / low) ** (1.0 / (count - 1))
        return tuple(low * ratio**step for step in range(count))

    def kernel(self, spec: KernelSpec) -> torch.Tensor:
        """The N x N kernel matrix of ``spec`` (a new float32 tensor; exact unit diagonal)."""
        if spec.kind == "gaussian":
            matrix = self.squared.mul(-0.5 / spec.bandwidth**2).exp_()
        elif spec.kind == "laplace":
            matrix = self.euclidean.mul(-1.0 / spec.bandwidth).exp_()
        else:
            raise ConfigError(f"unknown kernel {spec.kind!r}: use one of {', '.join(KERNEL_KINDS)}")
        return matrix.fill_diagonal_(1.0)  # rounding can leave 1 - 1e-7 on the diagonal


def draw_split_positions(total: int, n_reference: int, num_permutations: int, seed: int,
                         device: torch.device) -> torch.Tensor:
    """Positions of the smaller side of the observed split (row 0) and of B random re-splits.

    Each random row is the first s entries of a random permutation of the N positions (a uniformly random
    s-subset; one ``randperm`` per row is 3x faster on the CPU than a top-k of uniform draws); a fresh seeded
    generator per call, so the same seed gives the same splits. Returns a (B+1) x s int64 tensor.
    """
    side = min(n_reference, total - n_reference)
    generator = torch.Generator(device=device).manual_seed(seed)
    positions = torch.empty(num_permutations + 1, side, dtype=torch.int64, device=device)
    for row in range(1, num_permutations + 1):
        positions[row] = torch.randperm(total, generator=generator, device=device)[:side]
    start = 0 if side == n_reference else n_reference  # the observed smaller side
    positions[0] = torch.arange(start, start + side, device=device)
    return positions


def split_mmd2_from_sums(within: torch.Tensor, linear: torch.Tensor, diagonal: torch.Tensor, total_sum: float,
                         trace: float, side: int, other: int) -> torch.Tensor:
    """Unbiased MMD² of splits (float64) from uᵀKu (``within``), uᵀr (``linear``), the side's diagonal sum."""
    inside = within - diagonal  # pairs i != j inside the smaller side
    across = linear - within
    outside = (total_sum - trace) - inside - 2.0 * across
    return inside / (side * (side - 1)) + outside / (other * (other - 1)) - 2.0 * across / (side * other)


class PermutationSplits:
    """B random re-splits of a pool of N rows (plus the observed one), shared by every kernel of a test."""

    def __init__(self, total: int, n_reference: int, num_permutations: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        """Args:
        total: N, the pooled rows.
        n_reference: Rows of the pool that form the reference (the first ones).
        num_permutations: B.
        seed: Seed of the splits.
        device: Where the splits (and the kernels they are used with) live.
        """
        if not 2 <= n_reference <= total - 2:
            raise ConfigError(f"a split needs at least 2 rows a side, got {n_reference} of {total}")
        self.total = int(total)
        self.n_reference = int(n_reference)
        self.num_permutations = int(num_permutations)
        self.device = torch.device(device)
        self.positions = draw_split_positions(self.total, self.n_reference, self.num_permutations, seed,
                                              self.device)
        self.side = int(self.positions.shape[1])
        self.other = self.total - self.side
        self.method = "gather" if self.side**2 * GATHER_COST_RATIO < self._product_share() * total**2 \
            else "product"
        self._indicators: torch.Tensor | None = None

    @staticmethod
    def _product_share() -> float:
        return (SYMMETRIC_BLOCKS + 1) / (2 * SYMMETRIC_BLOCKS)

    def mmd2(self, kernel: torch.Tensor) -> torch.Tensor:
        """Unbiased MMD² of every split (B+1, float64; entry 0 observed) for a symmetric N x N ``kernel``."""
        if kernel.shape != (self.total, self.total):
            raise ConfigError(f"kernel is {tuple(kernel.shape)}, the splits are of {self.total} rows")
        row_sums = kernel.sum(1).double()  # float32 sums of <= N terms: ~1e-7 relative error
        diagonal = kernel.diagonal().double()
        within = self._within_gather(kernel) if self.method == "gather" else self._within_product(kernel)
        return split_mmd2_from_sums(within, row_sums[self.positions].sum(1), diagonal[self.positions].sum(1),
                                    float(row_sums.sum()), float(diagonal.sum()), self.side, self.other)

    def _indicator_block(self, start: int, stop: int) -> torch.Tensor:
        block = torch.zeros(stop - start, self.total, device=self.device)
        return block.scatter_(1, self.positions[start:stop], 1.0)

    def _within_product(self, kernel: torch.Tensor) -> torch.Tensor:
        """uᵀKu for every split through the upper-triangular blocks of the product U·K."""
        rows = self.num_permutations + 1
        block_rows = max(1, PERMUTATION_BLOCK_ELEMENTS // self.total)
        if self._indicators is None and rows <= block_rows:
            self._indicators = self._indicator_block(0, rows)  # kept: every kernel reuses it
        edges = [round(step * self.total / SYMMETRIC_BLOCKS) for step in range(SYMMETRIC_BLOCKS + 1)]
        results = []
        for start in range(0, rows, block_rows):
            stop = min(rows, start + block_rows)
            indicators = self._indicators
            if indicators is None:
                indicators = self._indicator_block(start, stop)
            within = torch.zeros(stop - start, dtype=torch.float64, device=self.device)
            for low, high in itertools.pairwise(edges):
                if high == low:
                    continue
                left = indicators[:, low:high]
                product = left @ kernel[low:high, low:]  # this row block against itself and all later columns
                width = high - low
                within += (product[:, :width] * left).sum(1).double()
                if high < self.total:
                    within += 2.0 * (product[:, width:] * indicators[:, high:]).sum(1).double()
            results.append(within)
        return torch.cat(results)

    def _within_gather(self, kernel: torch.Tensor) -> torch.Tensor:
        """uᵀKu for every split by summing the s x s kernel entries of its positions."""
        flat = kernel.reshape(-1)
        # int32 indices gather faster; sorted positions read memory in order
        index_type = torch.int32 if self.total**2 < 2**31 else torch.int64
        positions = self.positions.sort(1).values.to(index_type)
        block_rows = max(1, GATHER_BLOCK_ELEMENTS // (self.side * self.side))
        results = []
        for start in range(0, positions.shape[0], block_rows):
            chunk = positions[start:start + block_rows]
            index = (chunk[:, :, None] * self.total + chunk[:, None, :]).reshape(-1)
            values = flat.index_select(0, index).view(chunk.shape[0], -1)
            results.append(values.sum(1, dtype=torch.float64))
        return torch.cat(results)


def permutation_p_value(statistics: torch.Tensor) -> tuple[float, int]:
    """(p, b) for statistics whose entry 0 is observed: p = (b + 1) / (B + 1), b = #{permuted >= observed}.

    Never 0: the observed split counts as one of the B + 1 equally likely splits under no drift.
    """
    exceed = int((statistics[1:] >= statistics[0]).sum())
    return (exceed + 1) / statistics.numel(), exceed
