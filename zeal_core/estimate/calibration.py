"""Temperature scaling (Guo et al., ICML 2017) and the expected calibration error: the estimators' first step.

A network's softmax is usually over-confident. Temperature scaling divides the logits by one scalar T > 0
fitted on labelled held-out data (the reference) by minimising the negative log-likelihood

    T* = argmin_T  -(1/N) sum_i log softmax(z_i / T)[y_i]

which leaves every prediction (the argmax) unchanged and only rescales how sure the model says it is.
The expected calibration error with B equal-width confidence bins is

    ECE = sum_b (|bin b| / N) * |accuracy(bin b) - mean confidence(bin b)|

(0 for a perfectly calibrated model; reported in points of accuracy x 0.01, i.e. as a share).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zeal_core.errors import ConfigError

# Search range of log T: T in [e^-5, e^5] ~ [0.0067, 148] covers networks from far under- to far
# over-confident; the NLL is convex in 1/T, so a bounded scalar search finds the minimum.
LOG_T_BOUNDS = (-5.0, 5.0)
ECE_BINS = 15  # the usual number of bins (Guo et al.)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64 (stable for large logits)."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log softmax of ``logits / temperature`` in float64.

    Exact where the softmax itself rounds to 1: log p_max = -log1p(sum_{j != max} exp(z_j - z_max)) keeps
    the tiny differences between very confident items that ranking-based estimators (ATC) rely on.
    """
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    exp[np.arange(exp.shape[0]), shifted.argmax(axis=1)] = 0.0  # leave out the max term (it is exactly 1)
    return shifted - np.log1p(exp.sum(axis=1, keepdims=True))


def negative_entropy(log_probs: np.ndarray) -> np.ndarray:
    """sum_c p_c log p_c per row from log-probabilities: 0 for a one-hot output, -log C for a uniform one."""
    return (np.exp(log_probs) * log_probs).sum(axis=1)


def _check_logits_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ConfigError(f"logits must be N x C with N >= 1 and C >= 2, got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ConfigError(f"labels must have one entry per row of logits ({logits.shape[0]}), "
                          f"got shape {labels.shape}")
    if not np.isfinite(logits).all():
        raise ConfigError("logits hold NaN or inf: check the model's outputs")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ConfigError(f"labels must lie in [0, {logits.shape[1] - 1}] (the model's classes), got "
                          f"[{labels.min()}, {labels.max()}]: drop items of classes the model does not "
                          "predict")
    return logits, labels


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / T)[label] (nats)."""
    logits, labels = _check_logits_labels(logits, labels)
    log_probs = log_softmax(logits, temperature)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` on labelled data.

    Args:
        logits: N x C raw classifier outputs (not softmaxed).
        labels: N true labels in [0, C).

    Returns:
        T (> 1 softens an over-confident model, < 1 sharpens an under-confident one).

    Raises:
        ConfigError: Shapes disagree, values are not finite, or labels fall outside the model's classes.
    """
    from scipy.optimize import minimize_scalar  # imported when fitting only (a kept fit never needs it)

    logits, labels = _check_logits_labels(logits, labels)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-class confidence with ``bins`` equal-width bins over [0, 1] (a share in [0, 1]).

    Raises:
        ConfigError: Shapes disagree or ``bins`` < 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or probs.shape[0] < 1:
        raise ConfigError(f"probs must be N x C and labels N, got {probs.shape} and {labels.shape}")
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins!r}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(int(bins)):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did to the reference's calibration."""

    temperature: float  # T: calibrated probabilities are softmax(logits / T)
    ece_before: float  # ECE (share, 15 bins) of the raw softmax on the reference
    ece_after: float  # ECE of softmax(logits / T) on the reference (the data T was fitted on)
    nll_before: float  # mean NLL (nats) of the raw softmax on the reference
    nll_after: float  # mean NLL after scaling

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray) -> Calibration:
        """Fit T on labelled logits and measure ECE and NLL before and after."""
        temperature = fit_temperature(logits, labels)
        return cls(temperature=temperature,
                   ece_before=expected_calibration_error(softmax(logits), labels),
                   ece_after=expected_calibration_error(softmax(logits, temperature), labels),
                   nll_before=negative_log_likelihood(logits, labels),
                   nll_after=negative_log_likelihood(logits, labels, temperature))

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities softmax(logits / T), float64."""
        return softmax(logits, self.temperature)

    def log_probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities log softmax(logits / T), float64."""
        return log_softmax(logits, self.temperature)

    def to_dict(self) -> dict[str, float]:
        """Plain numbers for an estimate's details."""
        return {"temperature": self.temperature, "ece_before": self.ece_before,
                "ece_after": self.ece_after, "nll_before": self.nll_before, "nll_after": self.nll_after}
