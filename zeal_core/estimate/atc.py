"""Average Thresholded Confidence (ATC; Garg et al., ICLR 2022) on the max-softmax or negative-entropy score.

On the labelled reference R, pick the threshold t at which the share of items scoring above it equals the
reference accuracy:

    (1/|R|) sum_{i in R} 1[s(x_i) > t] = acc(R)

and estimate the accuracy on an unlabelled sample S by the share of its items above the same threshold:

    ATC(S) = (1/|S|) sum_{i in S} 1[s(x_i) > t]

The score s is the temperature-scaled max-softmax (``atc-mc``) or its negative entropy sum_c p_c log p_c
(``atc-ne``). Scores are computed from log-probabilities so that very confident items keep their order.
The interval is a percentile bootstrap: replicate b is the share of a resample of the sample above the
threshold refitted on resample b of the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from zeal_core.embed import Embeddings
from zeal_core.estimate.base import AccuracyEstimator, logits_of, register_estimator
from zeal_core.estimate.calibration import negative_entropy

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet


def atc_threshold(scores: np.ndarray, accuracy: float) -> float:
    """The t at which the share of ``scores`` strictly above t is as close as possible to ``accuracy``.

    With k = round(accuracy * N), t lies halfway between the k-th and (k+1)-th highest scores, so exactly k
    scores exceed it when there are no ties there.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    count = len(ordered)
    above = round(float(accuracy) * count)
    if above <= 0:
        return float(ordered[0])  # nothing is strictly above the highest score
    if above >= count:
        return float(np.nextafter(ordered[-1], -np.inf))  # everything is above
    return float((ordered[above - 1] + ordered[above]) / 2.0)


class ThresholdedConfidence(AccuracyEstimator):
    """ATC with the score chosen by the subclass (``score_kind``)."""

    score_kind: ClassVar[str] = "mc"  # "mc": max softmax (as log p_max), "ne": negative entropy

    def scores(self, embeddings: Embeddings) -> np.ndarray:
        """Per-item scores: log max-softmax or negative entropy, after temperature scaling."""
        assert self.calibration is not None
        log_probs = self.calibration.log_probs(logits_of(embeddings))
        return log_probs.max(axis=1) if self.score_kind == "mc" else negative_entropy(log_probs)

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        reference_scores = self.scores(reference)
        correct = reference.preds == reference.labels
        self.threshold = atc_threshold(reference_scores, self.reference_accuracy)
        self.replicate_thresholds = np.array([atc_threshold(reference_scores[rows], correct[rows].mean())
                                              for rows in self.reference_rows(len(correct))])
        self.fit_details = {"threshold": self.threshold,
                            "reference_share_above": float((reference_scores > self.threshold).mean())}

    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
        scores = self.scores(sample)
        accuracy = float((scores > self.threshold).mean())
        replicates = (scores[self.sample_rows(len(scores))] > self.replicate_thresholds[:, None]).mean(axis=1)
        low, high = self.interval(accuracy, replicates)
        return accuracy, low, high, {"threshold": self.threshold}


@register_estimator
class ThresholdedMaxConfidence(ThresholdedConfidence):
    """ATC on the max-softmax score."""

    name = "atc-mc"
    description = "share of items whose max-softmax exceeds the reference-fitted threshold (ATC, Garg et al.)"
    score_kind = "mc"


@register_estimator
class ThresholdedNegativeEntropy(ThresholdedConfidence):
    """ATC on the negative-entropy score."""

    name = "atc-ne"
    description = "share of items whose negative entropy exceeds the reference-fitted threshold (ATC-NE)"
    score_kind = "ne"
