"""When to say "unknown shift": a rule learnt on shift families the signatures never saw.

The signatures always have a best match. For a shift unlike every one of them the best match is still
*some* corruption, often with a fair likelihood: a score near chance, or a strong score for the wrong
family. Whether the best match deserves to be named is learnt here, on held-out subsets of two kinds
(``calibration``):

- *unseen*: a bank family is left out of the signatures (leave one family out) and its sets are
  diagnosed; any name is wrong;
- *known*: every bank set diagnosed by the full signatures; the name is wrong when its family is.

Per diagnosed sample, with c* the best-scoring corruption, a its score (``calibration.cause_scores``),
d the Mahalanobis distance of the sample's mean statistics from c*'s best signature in units of their
variance (U dimensions), n the sample size and m the reference images behind a signature:

    x = [ log(d / U),                      how significant the misfit is
          log(d (1/n + 1/m)),              how large it is per image (n-free for a systematic misfit)
          (a_c* - max_{c of another family} a_c) / n,   per-image margin over the best other family
          (a_c* - second best a_c) / n,    per-image margin over the runner-up
          log n ]

and P(wrong | x) is a ridge logistic regression on the standardised x. The sample is called "unknown"
when P(wrong) exceeds the threshold that rejects ``recall`` of the unseen subsets (0.9 by default): the
rule is tuned to say "I don't know" to nine in ten shifts of a family it never saw, and it names a known
shift unless the evidence for its family is as weak as that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("log_misfit", "log_misfit_per_image", "family_margin", "kind_margin", "log_n")
RIDGE = 1.0  # L2 penalty on the standardised weights
NEWTON_STEPS = 50
MARGIN_CAP = 50.0  # per-image margin used when no other family competes (a one-family bank)


def rule_features(scores: np.ndarray, corruption_distance: np.ndarray, families: np.ndarray, n: int,
                  dims: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """x of B samples and the index of each one's best corruption.

    Args:
        scores: B x K corruption scores a_c.
        corruption_distance: B x K distance of each corruption's best signature.
        families: K family names.
        n: Sample size.
        dims: U, the dimension of the statistics.
        rows: m, the reference images behind a signature.
    """
    batch = np.arange(len(scores))
    best = scores.argmax(1)
    top = scores[batch, best]
    other = np.where(families[None, :] != families[best][:, None], scores, -np.inf).max(1)
    ranked = np.sort(scores, axis=1)
    second = ranked[:, -2] if scores.shape[1] > 1 else np.full(len(scores), -np.inf)
    distance = np.maximum(corruption_distance[batch, best], 1e-9)
    family_margin = np.where(np.isfinite(other), (top - other) / n, MARGIN_CAP)
    kind_margin = np.where(np.isfinite(second), (top - second) / n, MARGIN_CAP)
    features = np.stack([np.log(distance / dims), np.log(distance * (1.0 / n + 1.0 / rows)),
                         np.minimum(family_margin, MARGIN_CAP), np.minimum(kind_margin, MARGIN_CAP),
                         np.full(len(scores), np.log(n))], axis=1)
    return features, best


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class UnknownRule:
    """P(the best match's family is wrong | x) and the threshold above which the answer is "unknown"."""

    mean: np.ndarray  # standardisation of x
    scale: np.ndarray
    weights: np.ndarray  # intercept first
    threshold: float  # P(wrong) above which the diagnosis says "unknown shift"
    log_n_range: tuple[float, float]  # log n seen in calibration (x's last entry is clipped to it)

    @classmethod
    def fit(cls, features: np.ndarray, wrong: np.ndarray, unseen: np.ndarray, recall: float) -> UnknownRule:
        """Fit on calibration samples: x, whether the named family was wrong, whether it was unseen.

        The threshold is the largest that still rejects ``recall`` of the unseen samples.
        """
        mean, scale = features.mean(0), features.std(0) + 1e-9
        design = np.hstack([np.ones((len(features), 1)), (features - mean) / scale])
        penalty = RIDGE * np.eye(design.shape[1])
        penalty[0, 0] = 0.0
        weights = np.zeros(design.shape[1])
        target = wrong.astype(np.float64)
        for _ in range(NEWTON_STEPS):
            predicted = _sigmoid(design @ weights)
            gradient = design.T @ (predicted - target) + penalty @ weights
            hessian = (design * (predicted * (1 - predicted))[:, None]).T @ design + penalty
            step = np.linalg.solve(hessian, gradient)
            weights -= step
            if np.abs(step).max() < 1e-8:
                break
        log_n = features[:, -1]
        rule = cls(mean=mean, scale=scale, weights=weights, threshold=0.5,
                   log_n_range=(float(log_n.min()), float(log_n.max())))
        probability = rule.probability(features)
        if unseen.any():
            rule.threshold = float(np.quantile(probability[unseen], 1.0 - recall))
        return rule

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(wrong family) of each row of x (log n clipped to the calibrated range)."""
        values = np.array(features, dtype=np.float64, copy=True)
        values[:, -1] = np.clip(values[:, -1], *self.log_n_range)
        design = np.hstack([np.ones((len(values), 1)), (values - self.mean) / self.scale])
        return _sigmoid(design @ self.weights)

    def to_dict(self) -> dict[str, float | dict[str, float]]:
        """The fitted weights (on standardised x) and the threshold, for the fit report."""
        return {"weights": dict(zip(("intercept", *FEATURES), self.weights.tolist(), strict=True)),
                "threshold": self.threshold}
