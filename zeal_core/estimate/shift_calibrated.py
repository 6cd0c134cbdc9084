"""Shift-calibrated confidence (ours): a per-image correctness model learnt from the shift bank.

Temperature scaling calibrates the model on clean data only; under a shift its confidence means something
else. The shift bank shows how it changes: the same reference images under every corruption, labels known.
This estimator learns, on the bank and the clean reference, the probability that an image is classified
correctly from label-free signals of the image and of the batch it came in:

    P(correct_i) = sigmoid(w . z_i),   z_i = standardised [ logit c_i,  s_i,  s_i logit c_i ],
    c_i = max_k p_ik (calibrated confidence),   s_i = log(h_{yhat_i} / h_R,yhat_i),

with h the batch's mean calibrated probabilities, h_R the reference's and yhat_i the predicted class: s_i
says how over-predicted the image's class is in this batch. It carries what prior-matched ATC uses (a class
that suddenly takes far more than its share of the batch is where the model is confidently wrong); the fit
decides how much to trust it, and how much confidence means under shift. The estimate is the mean predicted
probability over the sample. Two batch-level signals we tried as well (the batch's confidence drop, as in
DoC, and the negative entropy) did not lower the error on held-out corruptions of the reference images and
made a fit on a small bank extrapolate badly, so they are left out.

Fitting: logistic regression (Newton's method, ridge 1 on the standardised weights) on every bank image
and every clean reference image, each seen in batches of 50, 100 and 250 images and in its whole shifted
set, so that the batch signals are learnt at the noise levels of small and large samples.

Interval: a percentile bootstrap over the sample's items (batch signals recomputed per resample), widened
in quadrature by the estimator's own error on corruptions it was not fitted on: the root-mean-square
error over the bank's shifts when the corruptions are split into ``folds`` groups and each group is
predicted by a fit on the others. The interval then covers sampling noise plus a fit error of that size
(for shifts the bank represents; a shift unlike every bank corruption can be off by more).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.estimate.base import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    AccuracyEstimator,
    logits_of,
    register_estimator,
    widen_interval,
)
from zeal_core.estimate.splits import bank_corruptions

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet

BATCH_SIZES = (50, 100, 250)  # batch sizes the training images are grouped in (plus each whole set)
RIDGE = 1.0  # L2 penalty on the standardised weights (there are ~10^5 training rows: it barely acts)
NEWTON_STEPS = 30
FOLDS = 5  # corruption groups for the fit-error estimate
FEATURES = ("logit_confidence", "log_share_ratio", "logit_confidence_x_log_share_ratio")
SHARE_FLOOR = 1e-6


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class _ItemSignals:
    """Per-item quantities of one set of calibrated log-probabilities that do not depend on the batch."""

    def __init__(self, log_probs: np.ndarray) -> None:
        probs = np.exp(log_probs)
        self.probs = probs
        self.predicted = log_probs.argmax(axis=1)
        top = log_probs.max(axis=1)
        others = np.exp(log_probs - top[:, None])
        others[np.arange(len(top)), self.predicted] = 0.0
        # log(1 - c) as log of the other classes' mass, exact where c rounds to 1
        self.logit_confidence = top - (top + np.log(np.maximum(others.sum(axis=1), 1e-300)))
        self.confidence = np.exp(top)


def _features(signals: _ItemSignals, counts: np.ndarray, reference_shares: np.ndarray) -> np.ndarray:
    """S x n x F features of the items under S batches given as counts over the items (rows sum to n)."""
    n = counts.shape[1]
    shares = counts @ signals.probs / n  # S x C
    ratio = np.log(np.maximum(shares[:, signals.predicted], SHARE_FLOOR)
                   / np.maximum(reference_shares[signals.predicted], SHARE_FLOOR))  # S x n
    logit = np.broadcast_to(signals.logit_confidence, ratio.shape)
    return np.stack([logit, ratio, logit * ratio], axis=-1)


def fit_logistic(features: np.ndarray, correct: np.ndarray, ridge: float = RIDGE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge logistic regression on standardised features: (weights with intercept first, means, scales)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-9
    design = np.hstack([np.ones((len(features), 1)), (features - mean) / scale])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    weights = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        predicted = _sigmoid(design @ weights)
        gradient = design.T @ (predicted - correct) + penalty @ weights
        hessian = (design * (predicted * (1.0 - predicted))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return weights, mean, scale


@register_estimator
class ShiftCalibratedConfidence(AccuracyEstimator):
    """Mean of a per-image correctness model fitted on the shift bank (see the module docstring)."""

    name = "shift-calibrated"
    description = ("mean P(correct) from a logistic model of confidence and class over-prediction, "
                   "fitted on the shift bank (ours)")
    needs_bank = True

    def __init__(self, folds: int = FOLDS, level: float = DEFAULT_LEVEL, bootstrap: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0) -> None:
        """Args:
        folds: Corruption groups for the fit-error estimate that widens the interval (0: no widening).
        level: Two-sided coverage of the interval.
        bootstrap: Bootstrap replicates.
        seed: Seeds the batch grouping of the training images and the bootstrap.
        """
        super().__init__(level=level, bootstrap=bootstrap, seed=seed)
        from zeal_core.validate import check_int

        self.folds = check_int(folds, "folds", 0, 100)

    def _signals(self, embeddings: Embeddings) -> _ItemSignals:
        assert self.calibration is not None
        return _ItemSignals(self.calibration.log_probs(logits_of(embeddings)))

    def _training_rows(self, sets: list[Embeddings], rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Features and correctness of every image of ``sets``, in random batches of each size."""
        rows, targets = [], []
        for embeddings in sets:
            signals = self._signals(embeddings)
            correct = (embeddings.preds == embeddings.labels).astype(np.float64)
            n = len(embeddings)
            for size in [*(size for size in BATCH_SIZES if size < n), n]:
                order = rng.permutation(n)
                for start in range(0, n - size + 1, size):
                    batch = order[start:start + size]
                    part = _ItemSignals.__new__(_ItemSignals)
                    part.__dict__ = {key: value[batch] for key, value in signals.__dict__.items()}
                    rows.append(_features(part, np.ones((1, size)), self.shares)[0])
                    targets.append(correct[batch])
        return np.concatenate(rows), np.concatenate(targets)

    def _fit_sets(self, sets: list[Embeddings]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        features, correct = self._training_rows(sets, np.random.default_rng(self.seed))
        return fit_logistic(features, correct)

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        probs = self.calibrated_probs(reference)
        self.shares = probs.mean(axis=0)
        self.confidence = float(probs.max(axis=1).mean())
        for shifted in bank:
            if shifted.embeddings.labels is None:
                raise ConfigError(f"bank shift {shifted.spec.text} has no labels: build the bank with labels")
        self.model = self._fit_sets([reference, *(shifted.embeddings for shifted in bank)])
        self.fit_spread = self._fold_spread(reference, bank) if self.folds else 0.0
        weights = dict(zip(("intercept", *FEATURES), self.model[0].tolist(), strict=True))
        self.fit_details = {"weights": weights,
                            "bank_shifts": len(bank), "fit_spread": self.fit_spread, "folds": self.folds}

    def _fold_spread(self, reference: Embeddings, bank: list[ShiftedSet]) -> float:
        """RMS error on whole bank shifts predicted by fits that left their corruption's group out."""
        names = bank_corruptions(bank)
        groups = min(self.folds, len(names))
        if groups < 2:
            return 0.0
        order = np.random.default_rng(self.seed).permutation(len(names))
        residuals = []
        for group in range(groups):
            held = {names[index] for index in order[group::groups]}
            model = self._fit_sets([reference, *(s.embeddings for s in bank if s.corruption not in held)])
            for shifted in bank:
                if shifted.corruption in held:
                    estimate = self._predict(self._signals(shifted.embeddings),
                                             np.ones((1, len(shifted.embeddings))), model)[0]
                    residuals.append(estimate - shifted.embeddings.accuracy)
        return float(np.sqrt(np.mean(np.square(residuals))))

    def _predict(self, signals: _ItemSignals, counts: np.ndarray,
                 model: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Estimated accuracy of S batches (counts over the items): mean P(correct) over each batch."""
        weights, mean, scale = model if model is not None else self.model
        features = (_features(signals, counts, self.shares) - mean) / scale
        probability = _sigmoid(weights[0] + features @ weights[1:])
        return (probability * counts).sum(axis=1) / counts.shape[1]

    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
        signals = self._signals(sample)
        n = len(sample)
        accuracy = float(self._predict(signals, np.ones((1, n)))[0])
        rows = self.sample_rows(n)
        replicates = np.empty(self.bootstrap)
        chunk = max(1, 2_000_000 // (n * len(FEATURES)))
        for start in range(0, self.bootstrap, chunk):
            block = rows[start:start + chunk]
            counts = np.zeros((len(block), n))
            np.add.at(counts, (np.repeat(np.arange(len(block)), n), block.ravel()), 1.0)
            replicates[start:start + len(block)] = self._predict(signals, counts)
        low, high = self.interval(accuracy, replicates)
        sampling = (low, high)
        low, high = widen_interval(accuracy, low, high, self.fit_spread, self.level)
        shares = signals.probs.mean(axis=0)
        return accuracy, low, high, {"sampling_interval": list(sampling), "fit_spread": self.fit_spread,
                                     "class_shift": 0.5 * float(np.abs(shares - self.shares).sum()),
                                     "confidence_drop": float(signals.confidence.mean()) - self.confidence}
