"""Does the label-shift assumption hold? p(x | y) unchanged, checked without labels.

A label shift changes how many images of each class arrive, never what the images of a class look like.
A covariate shift that makes the model predict one class for most images (the image small on a web page,
a heavy overlay) changes the prediction histogram just as a label shift does, and black-box shift
estimation happily reads it as "most images are now class k". What a label shift cannot do is move the
images away from the reference images of the class they are predicted as. So within each predicted
class the sample's features are compared with the reference's (``zeal_core.estimate.feature_shift``):

    a_i = log d_i - log m_{yhat_i} - o_{yhat_i}   (d_i: mean distance of item i's penultimate features to
                                                   its 5 nearest reference items; m_c: the usual such
                                                   distance of the reference items predicted c, leave-one-
                                                   out; o_c: what remains of their mean after that)
    r   = mean over the sample of a_i

Each predicted class's reference items average a_i = 0, so r stays near 0 under any class mix (each item
is measured against its own predicted class, tight classes and loose ones alike). It grows
when the images moved away from the reference images of their class, and it falls when they all came
closer to a few of them: an overlay that makes every image look like one typical digit leaves the images
unusually alike (both break p(x | y)). Standardised,

    z = r / sqrt(s^2 / n + sum_c q_c^2 v_c)

with s the spread of a_i over the reference, q_c the sample's share of predictions of class c and v_c the
variance of the estimated o_c (its items' variance over their count): a sample of one or two classes
inherits the error of those classes' offsets, which a reference of a few hundred images knows only
roughly. The assumption is rejected when |z| exceeds the threshold calibrated on held-out clean and
label-shifted subsets (the ``1 - false_reject`` quantile of their |z|, so a real label shift is rejected
about that often) *and* |r| exceeds ``MIN_EFFECT`` (neighbours at least that much farther or nearer in
log units: at large n a tiny, harmless difference would otherwise be significant).
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
    class_offset: np.ndarray  # C: o_c, mean of the reference items' log-distance ratios per predicted class
    offset_variance: np.ndarray  # C: v_c, variance of the estimate o_c (0 for a class never predicted)
    base: float  # mean a_i over the reference items (leave-one-out; 0 up to rounding)
    spread: float  # standard deviation of a_i over the reference items
    threshold: float = float("inf")  # |z| above which the assumption is rejected (set by ``calibrate``)
    min_effect: float = MIN_EFFECT  # |r| must also exceed this

    @classmethod
    def fit(cls, features: np.ndarray, preds: np.ndarray, num_classes: int, seed: int = 0) -> LabelShiftCheck:
        """Fit on reference features and the model's predictions for them (uncalibrated: threshold inf)."""
        shift = FeatureShift(features, preds, num_classes, seed)
        raw, kept = shift.reference_items, shift.reference_preds
        offset, variance = np.zeros(num_classes), np.zeros(num_classes)
        for c in np.unique(kept):
            members = raw[kept == c]
            offset[c] = float(members.mean())
            variance[c] = float(members.var() / len(members)) if len(members) > 1 else float(raw.var())
        items = raw - offset[kept]
        return cls(shift=shift, class_offset=offset, offset_variance=variance, base=float(items.mean()),
                   spread=float(max(items.std(), 1e-6)))

    def items(self, features: np.ndarray, preds: np.ndarray) -> np.ndarray:
        """a_i of every item of a sample (or of held-out rows, for calibration)."""
        preds = np.asarray(preds, dtype=np.int64)
        return self.shift.item_scores(features, preds) - self.class_offset[preds]

    def standardise(self, item_mean: np.ndarray | float, shares: np.ndarray, n: int) -> np.ndarray:
        """z of samples of n items whose a_i average to ``item_mean``, with predicted class ``shares``
        (C, or one row per sample)."""
        offsets = (np.atleast_2d(shares) ** 2 * self.offset_variance).sum(-1)
        error = np.sqrt(self.spread ** 2 / n + offsets)
        z = (np.asarray(item_mean, dtype=np.float64) - self.base) / error
        return z if np.ndim(shares) > 1 else z[0]

    def calibrate(self, null_z: np.ndarray, false_reject: float) -> None:
        """Set the threshold to the ``1 - false_reject`` quantile of |z| on samples where the assumption
        holds (held-out clean and label-shifted subsets)."""
        values = np.abs(np.asarray(null_z, dtype=np.float64))
        self.threshold = float(np.quantile(values, 1.0 - false_reject)) if len(values) else float("inf")

    def test(self, features: np.ndarray, preds: np.ndarray) -> dict[str, float | bool]:
        """The check on one sample: feature shift r, its z, and whether the assumption holds."""
        items = self.items(features, preds)
        shift = float(items.mean()) - self.base
        shares = np.bincount(np.asarray(preds, dtype=np.int64), minlength=len(self.class_offset))
        z = float(self.standardise(items.mean(), shares[:len(self.class_offset)] / len(items), len(items)))
        holds = not (abs(z) > self.threshold and abs(shift) > self.min_effect)
        return {"feature_shift": shift, "z": z, "threshold": self.threshold, "min_effect": self.min_effect,
                "holds": holds}
