"""Does the label-shift assumption hold? p(x | y) unchanged, checked without labels.

A label shift changes how many images of each class arrive, never what the images of a class look like.
A covariate shift that makes the model predict one class for most images (the image small on a web page,
a heavy overlay) changes the prediction histogram just as a label shift does, and black-box shift
estimation happily reads it as "most images are now class k". What a label shift cannot do is move the
images away from the reference images of the class they are predicted as. So within each predicted
class the sample's features are compared with the reference's (``zeal_core.estimate.feature_shift``):

    a_i = log d_i - log m_{yhat_i}      (d_i: mean distance of item i's penultimate features to its 5
                                          nearest reference items; m_c: the usual such distance of the
                                          reference items predicted c, leave-one-out)
    r   = mean over the sample of a_i  -  mean over the reference of a_i

r stays near 0 under any class mix (each item is measured against its own predicted class) and grows
when the images themselves moved. Standardised, z = r sqrt(n) / s with s the spread of a_i over the
reference. The assumption is rejected when z exceeds the threshold calibrated on held-out clean and
label-shifted subsets (their ``1 - false_reject`` quantile, so a real label shift is rejected about that
often) *and* r exceeds ``MIN_EFFECT`` (neighbours at least that much farther in log units: at large n a
tiny, harmless difference would otherwise be significant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zeal_core.estimate.feature_shift import FeatureShift

# Smallest feature shift r (mean log-distance ratio) that counts as the images having moved: 0.05 means
# the nearest reference images of the predicted class are ~5 % farther than usual.
MIN_EFFECT = 0.05


@dataclass
class LabelShiftCheck:
    """The fitted check: reference features per predicted class and the calibrated threshold."""

    shift: FeatureShift  # reference features and per-class usual distances
    base: float  # mean a_i over the reference items (leave-one-out)
    spread: float  # standard deviation of a_i over the reference items
    threshold: float = float("inf")  # z above which the assumption is rejected (set by ``calibrate``)
    min_effect: float = MIN_EFFECT  # r must also exceed this

    @classmethod
    def fit(cls, features: np.ndarray, preds: np.ndarray, num_classes: int, seed: int = 0) -> LabelShiftCheck:
        """Fit on reference features and the model's predictions for them (uncalibrated: threshold inf)."""
        shift = FeatureShift(features, preds, num_classes, seed)
        items = shift.reference_items
        return cls(shift=shift, base=float(items.mean()), spread=float(max(items.std(), 1e-6)))

    def items(self, features: np.ndarray, preds: np.ndarray) -> np.ndarray:
        """a_i of every item of a sample (or of held-out rows, for calibration)."""
        return self.shift.item_scores(features, preds)

    def standardise(self, item_mean: np.ndarray | float, n: int) -> np.ndarray:
        """z of samples of n items whose a_i average to ``item_mean``."""
        return (np.asarray(item_mean, dtype=np.float64) - self.base) * np.sqrt(n) / self.spread

    def calibrate(self, null_z: np.ndarray, false_reject: float) -> None:
        """Set the threshold to the ``1 - false_reject`` quantile of z on samples where the assumption
        holds (held-out clean and label-shifted subsets)."""
        values = np.asarray(null_z, dtype=np.float64)
        self.threshold = float(np.quantile(values, 1.0 - false_reject)) if len(values) else float("inf")

    def test(self, features: np.ndarray, preds: np.ndarray) -> dict[str, float | bool]:
        """The check on one sample: feature shift r, its z, and whether the assumption holds."""
        items = self.items(features, preds)
        shift = float(items.mean()) - self.base
        z = float(self.standardise(items.mean(), len(items)))
        holds = not (z > self.threshold and shift > self.min_effect)
        return {"feature_shift": shift, "z": z, "threshold": self.threshold, "min_effect": self.min_effect,
                "holds": holds}
