"""Difference of confidences (DoC; Guillory et al., ICCV 2021).

The drop in accuracy is estimated by the drop in average (temperature-scaled) confidence from the reference
to the sample:

    DoC(S) = acc(R) - (AC(R) - AC(S))

with acc(R) the reference accuracy and AC the mean max-softmax. It keeps AC's assumption (confidence falls
as fast as accuracy) but corrects AC's offset on clean data. The interval is a percentile bootstrap: replicate
b is AC on a resample of the sample plus acc - AC on resample b of the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.embed import Embeddings
from zeal_core.estimate.base import AccuracyEstimator, register_estimator

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet


@register_estimator
class DifferenceOfConfidences(AccuracyEstimator):
    """Reference accuracy minus the fall in average confidence."""

    name = "doc"
    description = "reference accuracy minus the drop in average confidence (DoC, Guillory et al. 2021)"

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        confidence = self.calibrated_probs(reference).max(axis=1)
        correct = (reference.preds == reference.labels).astype(np.float64)
        self.reference_confidence = float(confidence.mean())
        rows = self.reference_rows(len(confidence))
        self.replicate_offsets = correct[rows].mean(axis=1) - confidence[rows].mean(axis=1)
        self.fit_details = {"reference_confidence": self.reference_confidence}

    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
        confidence = self.calibrated_probs(sample).max(axis=1)
        mean_confidence = float(confidence.mean())
        accuracy = self.reference_accuracy - (self.reference_confidence - mean_confidence)
        replicates = confidence[self.sample_rows(len(confidence))].mean(axis=1) + self.replicate_offsets
        low, high = self.interval(accuracy, replicates)
        return accuracy, low, high, {"mean_confidence": mean_confidence,
                                     "confidence_drop": self.reference_confidence - mean_confidence}
