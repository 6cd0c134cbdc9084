"""Shift signatures: how the set mean of the per-image statistics moves under each corruption and severity.

Each image is summarised by u = [g, (g_1..k - μ_clean)²] where g are its discriminant coordinates
(``statistics.Projection``) and the squared deviations of the first k coordinates carry changes of spread
(noise widens the feature cloud). For a hypothesis h (clean, or corruption c at severity s) the reference
images under h give the mean μ_h of u, its per-image covariance Σ_h (Ledoit-Wolf shrinkage), the class-wise
means μ_h^(j) (by true class j), the confusion matrix M_h = P(pred | true) and its soft form S_h (mean
softmax output by true class). Severities between the bank's
levels interpolate these linearly (clean is severity 0), on a grid of ``step``.

A sample of n images has mean t of u and prediction counts k. Its log-likelihood under h combines a
Gaussian part for t (central limit: Var t = Σ_h / n, plus Σ_h / m for the m reference images μ_h was
estimated from) and a multinomial part for the predictions, at two class priors:

    ℓ_h(π_ref) = log N(t; μ_h, Σ_h (1/n + 1/m)) + Σ_i k_i log (M_h π_ref)_i
    ℓ_h(π̂_h)   = log N(t; Σ_j π̂_hj μ_h^(j), Σ_h (1/n + 1/m_eff)) + Σ_i k_i log (M_h π̂_h)_i

where π̂_h is the BBSE estimate of the sample's class prior under h (``label_shift``: h's own M_h and S_h,
since a corruption changes what the model predicts) and m_eff = m / Σ_j π_ref,j w_j², w = π̂ / π_ref,
the effective size of the reweighted reference. The second form lets every hypothesis also explain a
change of class mix, so a label shift is not mistaken for a corruption and a corruption under a label
shift is still recognised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeal_core.diagnose.label_shift import (
    confusion_given_true,
    simplex_quadratic,
    soft_confusion_given_true,
)

CLEAN = "clean"  # kind of the hypothesis at severity 0


@dataclass(frozen=True)
class GroupRows:
    """One group of reference images (clean, or one bank set) as the projection sees them."""

    kind: str  # "clean" or the corruption name
    severity: float  # 0 for clean
    coordinates: np.ndarray  # float64, m x K discriminant coordinates g
    preds: np.ndarray  # int64, m predicted classes
    probs: np.ndarray  # float, m x C softmax outputs
    labels: np.ndarray  # int64, m true classes (the reference labels)


@dataclass(frozen=True)
class Evaluation:
    """Log-likelihoods of B samples under every hypothesis (B x H arrays)."""

    at_reference_prior: np.ndarray  # ℓ_h(π_ref)
    at_estimated_prior: np.ndarray  # ℓ_h(π̂_h)
    distance_reference: np.ndarray  # Mahalanobis² of t from μ_h in units of Var t (π_ref form)
    distance_estimated: np.ndarray  # the same for the reweighted mean (π̂ form)
    priors: np.ndarray  # B x H x C, the BBSE class priors π̂_h


@dataclass(frozen=True)
class SignatureTable:
    """Every hypothesis of a fitted model, on the severity grid. Row 0 is clean.

    "Anchors" are the hypotheses at the bank's own levels (and clean). BBSE is solved at the anchors only;
    a grid point between two anchors takes the interpolated class prior (the confusion matrices are
    interpolated the same way, so this is first-order exact and 4x cheaper at a 0.25 step).
    """

    kinds: tuple[str, ...]  # H: "clean" or corruption name per hypothesis
    severities: np.ndarray  # H: severity on the grid (0 for clean)
    fractions: np.ndarray  # H: share of the sample's images under the shift (1 for clean)
    means: np.ndarray  # H x U: μ_h
    class_means: np.ndarray  # H x C x U: μ_h^(j)
    whitening: np.ndarray  # H x U x U: L_h with Σ_h⁻¹ = L_h L_hᵀ
    logdets: np.ndarray  # H: log det Σ_h
    confusions: np.ndarray  # H x C x C: M_h[i, j] = P(pred i | true j)
    soft_confusions: np.ndarray  # H x C x C: S_h[i, j] = E[softmax_i | true j]
    anchors: np.ndarray  # A: hypothesis rows at the bank's levels (row 0, clean, first)
    anchor_low: np.ndarray  # H: position in ``anchors`` of the level at or below each hypothesis
    anchor_high: np.ndarray  # H: position of the level at or above
    anchor_weight: np.ndarray  # H: interpolation weight of ``anchor_high``
    spread_centre: np.ndarray  # k: μ_clean of the first k coordinates (for the squared deviations)
    prior: np.ndarray  # C: reference class proportions π_ref
    rows: int  # m, reference images behind each signature

    @property
    def corruptions(self) -> tuple[str, ...]:
        """Corruption names in table order."""
        return tuple(dict.fromkeys(kind for kind in self.kinds if kind != CLEAN))

    def expand(self, coordinates: np.ndarray) -> np.ndarray:
        """u = [g, (g_1..k - μ_clean)²] per row."""
        spread = coordinates[:, :len(self.spread_centre)] - self.spread_centre
        return np.concatenate([coordinates, spread ** 2], axis=1)

    def evaluate(self, means: np.ndarray, counts: np.ndarray, mean_probs: np.ndarray, n: int,
                 ridge: float) -> Evaluation:
        """Log-likelihoods of B samples of size ``n`` with mean statistics ``means`` (B x U), prediction
        ``counts`` (B x C) and mean softmax outputs ``mean_probs`` (B x C) under every hypothesis; ``ridge``
        sets BBSE's λ = ridge / n (hard and soft equations stacked, see ``label_shift``)."""
        batch, classes = counts.shape
        dims = self.means.shape[1]
        support = self.prior > 0
        hard, soft = self.confusions[self.anchors], self.soft_confusions[self.anchors]
        gram = np.matmul(hard.transpose(0, 2, 1), hard) + np.matmul(soft.transpose(0, 2, 1), soft)
        linear = np.matmul(counts / n, hard) + np.matmul(mean_probs, soft)  # A x B x C: Mᵀq + Sᵀp̄
        solved = simplex_quadratic(np.repeat(gram, batch, axis=0), linear.reshape(-1, classes), self.prior,
                                   ridge / n, support=support).reshape(len(self.anchors), batch, classes)
        weight = self.anchor_weight[:, None, None]
        priors = (1 - weight) * solved[self.anchor_low] + weight * solved[self.anchor_high]  # H x B x C
        variance_reference = 1.0 / n + 1.0 / self.rows
        weights = np.where(support, priors / np.where(support, self.prior, 1.0), 0.0)
        effective_rows = self.rows / np.maximum((self.prior * weights ** 2).sum(-1), 1e-12)
        variance_estimated = 1.0 / n + 1.0 / effective_rows  # H x B
        distance_reference = _mahalanobis(means[None] - self.means[:, None], self.whitening)
        distance_reference /= variance_reference
        shifted_means = np.matmul(priors, self.class_means)  # H x B x U
        distance_estimated = _mahalanobis(means[None] - shifted_means, self.whitening) / variance_estimated
        reference_predictions = np.matmul(self.confusions, self.prior)  # H x C
        multinomial_reference = np.log(np.clip(reference_predictions, 1e-300, None)) @ counts.T  # H x B
        predicted = np.matmul(priors, self.confusions.transpose(0, 2, 1))  # H x B x C
        multinomial_estimated = (counts[None] * np.log(np.clip(predicted, 1e-300, None))).sum(-1)
        logdets = self.logdets[:, None]
        gaussian_reference = -0.5 * (distance_reference + logdets + dims * np.log(variance_reference))
        gaussian_estimated = -0.5 * (distance_estimated + logdets + dims * np.log(variance_estimated))
        return Evaluation(at_reference_prior=(gaussian_reference + multinomial_reference).T,
                          at_estimated_prior=(gaussian_estimated + multinomial_estimated).T,
                          distance_reference=distance_reference.T, distance_estimated=distance_estimated.T,
                          priors=priors.transpose(1, 0, 2))

    def image_scores(self, expanded: np.ndarray, hypothesis: int) -> np.ndarray:
        """Per image: log density of u under hypothesis ``hypothesis`` minus under clean (N)."""
        def log_density(index: int) -> np.ndarray:
            whitened = (expanded - self.means[index]) @ self.whitening[index]
            return -0.5 * ((whitened ** 2).sum(1) + self.logdets[index])

        return log_density(hypothesis) - log_density(0)


def _mahalanobis(diff: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    """diff: H x B x U, whitening: H x U x U -> H x B quadratic forms diffᵀ L Lᵀ diff."""
    whitened = np.matmul(diff, whitening)
    return (whitened * whitened).sum(-1)


def build_table(groups: Sequence[GroupRows], spread_components: int, step: float, num_classes: int,
                fractions: Sequence[float] = (1.0,)) -> SignatureTable:
    """Signatures of ``groups`` (the first is clean) on a severity grid of ``step``.

    Args:
        groups: Clean reference first, then the bank sets, all on the same images (same labels).
        spread_components: k, coordinates whose squared deviation from clean is part of u.
        step: Severity grid step (e.g. 0.25); the bank's own levels are always on the grid.
        num_classes: C, the model's outputs.
        fractions: Shares of corrupted images in a sample; a share f < 1 adds the mixtures
            (1 - f) clean + f (c, s) of every grid hypothesis (exact moments of the mixture).
    """
    clean = groups[0]
    spread_centre = clean.coordinates[:, :spread_components].mean(0)
    labels = clean.labels
    prior = np.bincount(labels, minlength=num_classes)[:num_classes] / len(labels)

    def moments(group: GroupRows) -> tuple[np.ndarray, ...]:
        spread = group.coordinates[:, :spread_components] - spread_centre
        expanded = np.concatenate([group.coordinates, spread ** 2], axis=1)
        mean = expanded.mean(0)
        from sklearn.covariance import ledoit_wolf  # fitting only: a kept diagnoser never imports sklearn

        covariance = ledoit_wolf(expanded)[0]
        class_means = np.stack([expanded[labels == j].mean(0) if (labels == j).any() else mean
                                for j in range(num_classes)])
        confusion = confusion_given_true(group.preds, labels, num_classes)
        return mean, covariance, class_means, confusion, soft_confusion_given_true(group.probs, labels,
                                                                                   num_classes)

    levels: dict[str, list[tuple[float, tuple]]] = {}
    clean_moments = moments(clean)
    for group in groups[1:]:
        levels.setdefault(group.kind, []).append((float(group.severity), moments(group)))
    for ladder in levels.values():
        ladder.sort(key=lambda item: item[0])
    kinds, severities, shares, parts = [CLEAN], [0.0], [1.0], [clean_moments]
    anchors, low, high, weights = [0], [0], [0], [0.0]
    for fraction in sorted(set(fractions), reverse=True):
        for kind, ladder in levels.items():
            ladder_levels = [level for level, _ in ladder]
            first_anchor = len(anchors)
            for severity in _grid(ladder[-1][0], step, ladder_levels):
                position = int(np.searchsorted(ladder_levels, severity - 1e-9))  # first level >= severity
                upper, lower = ladder_levels[position], ladder_levels[position - 1] if position else 0.0
                if abs(severity - upper) < 1e-9:
                    anchors.append(len(kinds))
                kinds.append(kind)
                severities.append(severity)
                shares.append(fraction)
                parts.append(_mix(fraction, clean_moments, _interpolate(severity, clean_moments, ladder)))
                low.append(first_anchor + position - 1 if position else 0)
                high.append(first_anchor + position)
                weights.append((severity - lower) / (upper - lower))
    stacked = (np.stack(items) for items in zip(*parts, strict=True))
    means, covariances, class_means, confusions, soft = stacked
    covariances = _regularised(covariances)
    logdets = np.linalg.slogdet(covariances)[1]
    # Σ⁻¹ = L Lᵀ with L = (Cholesky factor of Σ)⁻ᵀ
    whitening = np.linalg.inv(np.linalg.cholesky(covariances)).transpose(0, 2, 1)
    return SignatureTable(kinds=tuple(kinds), severities=np.asarray(severities),
                          fractions=np.asarray(shares), means=means,
                          class_means=class_means, whitening=whitening, logdets=logdets,
                          confusions=confusions, soft_confusions=soft, anchors=np.asarray(anchors),
                          anchor_low=np.asarray(low),
                          anchor_high=np.asarray(high), anchor_weight=np.asarray(weights),
                          spread_centre=spread_centre, prior=prior, rows=len(labels))


def _grid(top: float, step: float, levels: list[float]) -> list[float]:
    points = set(np.round(np.arange(step, top + 1e-9, step), 6).tolist())
    points |= {round(level, 6) for level in levels}
    return sorted(point for point in points if 0 < point <= top + 1e-9)


def _mix(fraction: float, clean: tuple, shifted: tuple) -> tuple:
    """Moments of the mixture (1 - f) clean + f shifted: mean, covariance, class means, confusions."""
    if fraction >= 1.0:
        return shifted
    mean = (1 - fraction) * clean[0] + fraction * shifted[0]
    offset = shifted[0] - clean[0]
    covariance = ((1 - fraction) * clean[1] + fraction * shifted[1]
                  + fraction * (1 - fraction) * np.outer(offset, offset))
    return (mean, covariance, *((1 - fraction) * low + fraction * high
                                for low, high in zip(clean[2:], shifted[2:], strict=True)))


def _interpolate(severity: float, clean: tuple, ladder: list[tuple[float, tuple]]) -> tuple:
    below_level, below = 0.0, clean
    for level, values in ladder:
        if level >= severity - 1e-9:
            if level - below_level < 1e-9:
                return values
            weight = (severity - below_level) / (level - below_level)
            return tuple((1 - weight) * low + weight * high for low, high in zip(below, values, strict=True))
        below_level, below = level, values
    return ladder[-1][1]


def _regularised(covariances: np.ndarray) -> np.ndarray:
    """H x d x d covariances made safely positive definite: a ridge of 1e-6 of each matrix's mean
    variance (plus 1e-12 absolute). Shrinkage already keeps ordinary ones well conditioned; a model whose
    features barely vary (an untrained one, or a statistic constant on some shift) would otherwise leave a
    singular matrix and stop the fit."""
    dims = covariances.shape[-1]
    scale = np.trace(covariances, axis1=-2, axis2=-1) / dims
    ridge = 1e-6 * np.maximum(scale, 0.0) + 1e-12
    return covariances + ridge[:, None, None] * np.eye(dims)
