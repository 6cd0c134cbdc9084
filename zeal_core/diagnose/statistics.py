"""Per-image statistics and the discriminant projection the signature diagnoser works in.

Every image becomes a raw vector ``[features, entropy, max prob, log ||features||, logsumexp(logits)]``
(D + 4 numbers). A Fisher discriminant projection (LDA over the groups "clean" and every bank set) maps it
to K numbers that separate the shifts from one another and from clean images: the K leading solutions of

    B v = λ W_s v,    W_s = (1 - s) W + s diag(W)

where B is the scatter of the group means (each group weighted equally), W the pooled within-group
covariance, both of the raw vectors standardised by the pooled within-group standard deviation, and ``s``
the shrinkage (W has D + 4 dims but is estimated from a few hundred images per group). Each direction has
unit within-group variance. Raw vectors are affine in the features, so the projection does not depend on
how features are centred, and it can be fitted on any union of row folds from per-fold sums
(``FoldMoments``) without recomputing the raw vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeal_core.errors import ConfigError

SCALAR_NAMES = ("entropy", "max_prob", "log_feature_norm", "logsumexp")  # appended after the features


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def raw_statistics(features: np.ndarray, logits: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
    """N x (D + 4) raw per-image vectors (float64): the features, then the scalars of ``SCALAR_NAMES``.

    ``logits`` may be None (older embeddings): log-probabilities stand in (their logsumexp is 0).
    """
    source = logits if logits is not None else np.log(np.clip(probs, 1e-12, None))
    log_probs = log_softmax(source)
    probabilities = np.exp(log_probs)
    values = np.asarray(source, dtype=np.float64)
    top = values.max(1)
    scalars = np.stack([
        -(probabilities * log_probs).sum(1),
        probabilities.max(1),
        np.log(np.linalg.norm(features, axis=1) + 1e-6),
        top + np.log(np.exp(values - top[:, None]).sum(1)),
    ], axis=1)
    return np.concatenate([np.asarray(features, dtype=np.float64), scalars], axis=1)


@dataclass(frozen=True)
class Projection:
    """x -> ((x - centre) / scale) @ directions: raw vectors to K discriminant coordinates."""

    centre: np.ndarray  # float64, D + 4: grand mean of the group means
    scale: np.ndarray  # float64, D + 4: pooled within-group standard deviation (floored)
    directions: np.ndarray  # float64, (D + 4) x K: unit within-group variance each
    eigenvalues: np.ndarray  # float64, K: between/within variance ratio of each direction

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.centre) / self.scale) @ self.directions


class FoldMoments:
    """Per-group, per-fold row counts, sums and pooled within scatter of raw vectors.

    ``add(group, raw, fold)`` is called once per group with every row's fold; ``projection(folds)`` then fits
    the LDA on the union of ``folds`` (sums of folds, plus the between-fold part of each group's scatter).
    """

    def __init__(self, num_folds: int) -> None:
        self.num_folds = num_folds
        self.counts: list[np.ndarray] = []  # per group: num_folds row counts
        self.sums: list[np.ndarray] = []  # per group: num_folds x d sums
        self._scatter: np.ndarray | None = None  # num_folds x d x d: Σ over groups of within-fold scatter

    def add(self, raw: np.ndarray, fold: np.ndarray) -> None:
        """Add one group's raw vectors, ``fold[i]`` being the fold of row i."""
        dims = raw.shape[1]
        if self._scatter is None:
            self._scatter = np.zeros((self.num_folds, dims, dims))
        counts = np.zeros(self.num_folds)
        sums = np.zeros((self.num_folds, dims))
        for index in range(self.num_folds):
            rows = raw[fold == index]
            counts[index] = len(rows)
            if len(rows):
                sums[index] = rows.sum(0)
                centred = rows - sums[index] / len(rows)
                self._scatter[index] += centred.T @ centred
        self.counts.append(counts)
        self.sums.append(sums)

    def projection(self, folds: Sequence[int], components: int, shrinkage: float) -> Projection:
        """The discriminant projection fitted on the rows of ``folds``.

        Raises:
            ConfigError: ``shrinkage`` outside [0, 1], or fewer than 2 groups.
        """
        if not 0.0 <= shrinkage <= 1.0:
            raise ConfigError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
        if self._scatter is None or len(self.sums) < 2:
            raise ConfigError("a discriminant projection needs at least 2 groups (clean and one shift)")
        chosen = list(folds)
        scatter = self._scatter[chosen].sum(0)
        means, total_rows = [], 0.0
        for counts, sums in zip(self.counts, self.sums, strict=True):
            picked_counts, picked_sums = counts[chosen], sums[chosen]
            total = picked_counts.sum()
            mean = picked_sums.sum(0) / total
            for count, fold_sum in zip(picked_counts, picked_sums, strict=True):
                if count:  # the part of the group's scatter between its folds' means
                    offset = fold_sum / count - mean
                    scatter += count * np.outer(offset, offset)
            means.append(mean)
            total_rows += total
        group_means = np.stack(means)
        within = scatter / max(total_rows - len(means), 1.0)
        scale = np.sqrt(np.maximum(np.diag(within), 1e-12))
        scale = np.maximum(scale, 1e-6 * max(float(scale.max()), 1e-12))
        within = within / np.outer(scale, scale)
        within = (1.0 - shrinkage) * within + shrinkage * np.diag(np.diag(within))
        within += 1e-9 * np.eye(len(within))
        centre = group_means.mean(0)
        standardised = (group_means - centre) / scale
        between = standardised.T @ standardised / len(group_means)
        keep = max(1, min(int(components), len(group_means) - 1, len(within)))
        size = len(within)
        import scipy.linalg  # fitting only

        eigenvalues, vectors = scipy.linalg.eigh(between, within, subset_by_index=[size - keep, size - 1])
        order = np.argsort(-eigenvalues)
        return Projection(centre=centre, scale=scale, directions=vectors[:, order],
                          eigenvalues=eigenvalues[order])
