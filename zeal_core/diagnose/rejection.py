"""When to say "unknown shift": a rule calibrated on shift families the signatures never saw.

The signatures always have a best match. For a shift unlike every one of them the best match is still
*some* corruption: often with a score near chance, or a good score for a signature that fits the sample
badly. Whether the best match deserves to be named is decided from two numbers per sample, with c* the
best-scoring corruption and a_c the corruption scores (``calibration.cause_scores``):

- its *family's support*: the posterior share of c*'s family among the corruptions,
  P(F*) = sum over c in F* of softmax(τ a)_c (τ: the calibrated temperature at this n). Low when other
  families fit about as well: the best match is not clearly better than the alternatives;
- its *misfit*: log(e + 0.001), e = max(d - U, 0) (1/n + 1/m), with d the Mahalanobis distance of the
  sample's mean statistics from c*'s best signature in units of their variance Σ (1/n + 1/m) (U
  dimensions, m reference images behind a signature): d - U removes what sampling noise alone gives, and
  the factor turns the rest into the squared offset per image, in units of Σ. So e estimates how far the
  sample's images sit from the signature whatever n and m are (calibration fits on half the reference,
  a check on all of it): about 0 when the sample looks like its signature, large when even the best
  signature is far.

The sample is called "unknown" when P(F*) < ``min_support`` or misfit > ``max_misfit``. Both thresholds
are calibrated on held-out subsets of two kinds (``calibration``, ``crossfit``):

- *unseen*: a bank family is left out of the signatures (leave one family out) and its sets are
  diagnosed; any name is wrong;
- *known*: every bank set diagnosed by the full signatures; the name is right when its family is.

Among the threshold pairs that call at least ``recall`` of the unseen subsets "unknown", the pair that
keeps the most rightly named known subsets named is chosen (when none reaches ``recall``, the pair with the
best sum of both rates). The known kinds a small reference cannot tell apart (blurs of 8 x 8 digits) get
"unknown" too: their family support is low, and naming one of them would be a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("family_support", "log_misfit")
MISFIT_FLOOR = 1e-3  # e below this counts as a perfect fit (log scale stays finite)
SUPPORT_GRID = np.round(np.linspace(0.0, 0.95, 20), 3)  # candidate min_support values
MISFIT_STEPS = 24  # candidate max_misfit values: quantiles of the calibration misfits, a fixed ladder, +inf
MISFIT_LADDER = (-6.0, -5.0, -4.0, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


def rule_features(scores: np.ndarray, corruption_distance: np.ndarray, families: np.ndarray,
                  temperature: float, dims: int, n: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """x = [family support, log misfit] of B samples and the index of each one's best corruption.

    Args:
        scores: B x K corruption scores a_c.
        corruption_distance: B x K distance of each corruption's best signature.
        families: K family names.
        temperature: τ at the samples' size.
        dims: U, the dimension of the statistics.
        n: The samples' size.
        rows: m, the reference images behind a signature.
    """
    batch = np.arange(len(scores))
    best = scores.argmax(1)
    logits = temperature * (scores - scores[batch, best][:, None])
    weights = np.exp(logits)
    same = families[None, :] == families[best][:, None]
    support = (weights * same).sum(1) / weights.sum(1)
    excess = np.maximum(corruption_distance[batch, best] - dims, 0.0) * (1.0 / n + 1.0 / rows)
    misfit = np.log(excess + MISFIT_FLOOR)
    return np.stack([support, misfit], axis=1), best


@dataclass
class UnknownRule:
    """The two calibrated thresholds, and what they did on the calibration subsets."""

    min_support: float  # a family support below this: "unknown"
    max_misfit: float  # a misfit above this: "unknown"
    unseen_rejected: float  # share of unseen calibration subsets called "unknown"
    known_kept: float  # share of rightly named known calibration subsets still named

    @classmethod
    def fit(cls, features: np.ndarray, wrong: np.ndarray, unseen: np.ndarray, recall: float) -> UnknownRule:
        """Choose the thresholds (see the module docstring) from calibration subsets: x, whether the named
        family was wrong, whether the subset's family was unseen."""
        right = ~wrong & ~unseen
        quantiles = np.quantile(features[:, 1], np.linspace(0.5, 1.0, MISFIT_STEPS))
        misfits = np.unique([*quantiles, *MISFIT_LADDER])
        best, best_key = (0.0, float("inf"), 0.0, 1.0), (-1, -np.inf)
        for support in SUPPORT_GRID:
            for misfit in [*misfits, np.inf]:
                rejected = (features[:, 0] < support) | (features[:, 1] > misfit)
                caught = float(rejected[unseen].mean()) if unseen.any() else 1.0
                kept = float((~rejected[right]).mean()) if right.any() else 1.0
                key = (int(caught >= recall), kept if caught >= recall else caught + kept)
                if key > best_key:
                    best, best_key = (float(support), float(misfit), caught, kept), key
        return cls(*best)

    def reject(self, features: np.ndarray) -> np.ndarray:
        """Whether each row of x is called "unknown"."""
        return (features[:, 0] < self.min_support) | (features[:, 1] > self.max_misfit)

    def strength(self, features: np.ndarray) -> np.ndarray:
        """How far past its thresholds each row of x is, in [0, 1]: the larger of the support's shortfall
        (as a share of ``min_support``) and 1 - exp(-(misfit - max_misfit)); 0 inside both."""
        short = np.clip((self.min_support - features[:, 0]) / max(self.min_support, 1e-9), 0.0, 1.0)
        over = 1.0 - np.exp(-np.clip(features[:, 1] - self.max_misfit, 0.0, None))
        return np.maximum(short, np.nan_to_num(over, nan=0.0))

    def to_dict(self) -> dict[str, float]:
        """The thresholds and their calibration rates, for the fit report."""
        return {"min_support": self.min_support, "max_misfit": self.max_misfit,
                "unseen_rejected": self.unseen_rejected, "known_kept": self.known_kept}
