"""The per-image correctness model behind ``shift-calibrated``: signals, features, logistic fit, the cap.

Per image i (calibrated probabilities p_i, predicted class yhat_i, confidence c_i = max_k p_ik) in a batch
with mean calibrated probabilities h, and the reference's h_R:

    z_i = [ logit c_i,  s_i,  s_i logit c_i ],   s_i = log(h_{yhat_i} / h_R,yhat_i)

(s_i: how over-predicted the image's class is in this batch). P(correct_i) = sigmoid(w . standardised z_i)
is a ridge logistic regression (Newton's method).

The over-prediction cap. If the images' classes keep the reference's shares pi (no label shift), the images
predicted as class k can be right at most as often as there are images of class k: with q_k the batch's
share of predictions of k,

    P(correct | yhat = k) <= min(1, (pi_k + z se_k) / q_k),   se_k = sqrt(pi_k (1 - pi_k) (1/n + 1/n_R))

(z = ``CAP_Z`` standard errors of the class's share in a batch of n and in the reference). A shift that
sends 90 % of the digits to one class cannot be more than ~20 % accurate, whatever the confidence says; the
logistic model, fitted on a bank whose worst collapse may be milder, extrapolates less steeply. The cap is
applied only as far as the images themselves moved (the feature-shift gate of ``feature_shift``), so a
batch that merely holds other classes is not capped.
"""

from __future__ import annotations

import numpy as np

SHARE_FLOOR = 1e-6
RIDGE = 1.0  # L2 penalty on the standardised weights (there are ~10^5 training rows: it barely acts)
NEWTON_STEPS = 30
CAP_Z = 1.64  # standard errors of a class share the cap allows for (one-sided 95 %)
FEATURES = ("logit_confidence", "log_share_ratio", "logit_confidence_x_log_share_ratio")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, stable for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class ItemSignals:
    """Per-item quantities of one set of calibrated log-probabilities that do not depend on the batch."""

    def __init__(self, log_probs: np.ndarray, shift_items: np.ndarray) -> None:
        """Args:
        log_probs: n x C calibrated log-probabilities.
        shift_items: n feature-shift item scores a_i relative to the reference mean (``feature_shift``).
        """
        probs = np.exp(log_probs)
        self.probs = probs
        self.predicted = log_probs.argmax(axis=1)
        top = log_probs.max(axis=1)
        others = np.exp(log_probs - top[:, None])
        others[np.arange(len(top)), self.predicted] = 0.0
        # log(1 - c) as log of the other classes' mass, exact where c rounds to 1
        self.logit_confidence = top - (top + np.log(np.maximum(others.sum(axis=1), 1e-300)))
        self.confidence = np.exp(top)
        self.shift_items = np.asarray(shift_items, dtype=np.float64)

    def take(self, rows: np.ndarray) -> ItemSignals:
        """The signals of ``rows`` only."""
        part = ItemSignals.__new__(ItemSignals)
        part.__dict__ = {key: value[rows] for key, value in self.__dict__.items()}
        return part


def features(signals: ItemSignals, counts: np.ndarray, reference_shares: np.ndarray) -> np.ndarray:
    """S x n x F features of the items under S batches given as counts over the items (rows sum to n)."""
    n = counts.shape[1]
    shares = counts @ signals.probs / n  # S x C
    ratio = np.log(np.maximum(shares[:, signals.predicted], SHARE_FLOOR)
                   / np.maximum(reference_shares[signals.predicted], SHARE_FLOOR))  # S x n
    logit = np.broadcast_to(signals.logit_confidence, ratio.shape)
    return np.stack([logit, ratio, logit * ratio], axis=-1)


def batch_summary(signals: ItemSignals, reference_shares: np.ndarray) -> np.ndarray:
    """Where a batch lies in the space the correctness model was fitted on: mean logit confidence, mean
    over-prediction s_i and the feature shift r (3 numbers)."""
    values = features(signals, np.ones((1, len(signals.predicted))), reference_shares)[0]
    return np.array([values[:, 0].mean(), values[:, 1].mean(), signals.shift_items.mean()])


def prediction_caps(signals: ItemSignals, counts: np.ndarray, class_shares: np.ndarray, reference_n: int,
                    z: float = CAP_Z) -> np.ndarray:
    """S x n: the most P(correct) an item can have given how over-predicted its class is (module doc)."""
    n = counts.shape[1]
    classes = len(class_shares)
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), signals.predicted] = 1.0
    predicted_shares = counts @ onehot / n  # S x C
    error = np.sqrt(class_shares * (1 - class_shares) * (1.0 / n + 1.0 / reference_n))
    caps = np.minimum(1.0, (class_shares + z * error) / np.maximum(predicted_shares, SHARE_FLOOR))
    return caps[:, signals.predicted]


def fit_logistic(design_features: np.ndarray, correct: np.ndarray, ridge: float = RIDGE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge logistic regression on standardised features: (weights with intercept first, means, scales)."""
    mean = design_features.mean(axis=0)
    scale = design_features.std(axis=0) + 1e-9
    design = np.hstack([np.ones((len(design_features), 1)), (design_features - mean) / scale])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    weights = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        predicted = sigmoid(design @ weights)
        gradient = design.T @ (predicted - correct) + penalty @ weights
        hessian = (design * (predicted * (1.0 - predicted))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return weights, mean, scale
