"""Prior-matched ATC (ours): ATC after moving the model's class shares back to their reference values.

Confidence-based estimators fail when a shift makes the model confidently wrong. On the digits model, fog,
contrast, spatter and strong rotations send most images to one or two classes at 80-95 % confidence: the
accuracy falls to 10-40 % while AC and ATC stay near 90 %. What gives such a shift away without labels is
the prediction histogram: the model's average soft prediction h = (1/n) sum_i p_i (calibrated
probabilities) moves far from its average h_R on the clean reference, although the images still come from
the same classes. If the class shares did not change (no label shift), the mass the model puts on a class
beyond its usual share must be misplaced.

The estimator assumes exactly that: the sample's classes follow the reference's shares, up to sampling
noise. It reweights every item's calibrated probabilities by one factor per class,

    p'_ic = w_c p_ic / sum_k w_k p_ik,   w chosen so that  (1/n) sum_i p'_ic = q_c  for every class c,

(the KL projection of the matrix of posteriors onto those with class marginal q, i.e. the fixed point of
iterative proportional fitting, found here by Newton's method; the same class-weight form as Saerens et
al. 2002's prior adjustment, but pulling towards a fixed marginal instead of away from it). The target q
allows for sampling noise: each class share may differ from the reference's by up to ``strength``
standard errors of the difference of two sample means,

    q_c = h_R,c + clip(h_c - h_R,c, -z se_c, z se_c),   se_c = s_c sqrt(1/n + 1/n_R),

with s_c^2 the variance of p_ic over the reference's items, then renormalised. Matching towards the model's
own shares h_R (rather than the label shares) leaves the reference untouched and needs no class-wise
calibration; a clean sample (h within noise of h_R) is left nearly unchanged, so the estimator reduces to
ATC there. Finally ATC is applied to the matched probability of the model's own prediction,

    estimate = (1/n) sum_i 1[log p'_{i, yhat_i} > t],   yhat_i = argmax_c p_ic,

with t the ATC threshold fitted on the reference. The interval is a percentile bootstrap that repeats the
whole procedure, matching included, on every resample of the sample's items, paired with a resample of the
reference (its own shares h_R and threshold, refitted at fit time).

Where it fails: under label shift (a batch of one class) it reads the class imbalance as model error and
underestimates; ``details["class_shift"]`` (total variation between h and h_R) and ``details["matched"]``
(how far the matching moved the estimate from plain ATC) let a caller show both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.estimate.atc import atc_threshold
from zeal_core.estimate.base import (
    DEFAULT_LEVEL,
    AccuracyEstimator,
    register_estimator,
)
from zeal_core.estimate.feature_shift import FeatureShift, gate

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet

DEFAULT_STRENGTH = 1.0  # z: class shares may move by this many standard errors before matching acts
# The covariate-shift gate, in units of the feature shift r (mean log ratio of nearest-reference distances,
# see feature_shift): below 0.05 (neighbours < 5 % farther than usual) nothing is matched; from 0.25 (28 %
# farther) matching acts at full strength.
GATE_LOW = 0.05
GATE_HIGH = 0.25
MATCH_TOLERANCE = 1e-4  # stop when every class share is this close to its target (well below 1/n, n <= 1000)
MATCH_ITERATIONS = 50  # Newton steps at most (5-10 usually suffice from zero)
# Newton steps for a bootstrap resample (started from the whole sample's solution): enough to bring the
# shares of typical resamples within 1e-3 of their targets; a few ill-conditioned ones (near one-hot
# probabilities) stop short, which moves an interval end by well under its bootstrap noise.
RESAMPLE_ITERATIONS = 5
LINE_SEARCH_HALVINGS = 12  # step halvings per Newton step before a sample counts as converged
RIDGE = 1e-9  # added to the Hessian's diagonal (a class whose matched share fell to ~0 makes it singular)
SHARE_FLOOR = 1e-9  # target shares and probabilities are kept above this (a class the reference lacks)
# Bootstrap replicates by default: fewer than the other estimators' 500, as each repeats the matching
# (the 5 % / 95 % quantiles then move by ~0.5 points between seeds at n = 100).
BOOTSTRAP = 200
CHUNK_ELEMENTS = 2_000_000  # samples x items x classes matched at once (bounds memory to ~16 MB a buffer)


def target_shares(mean_probs: np.ndarray, reference_shares: np.ndarray, spread: np.ndarray, n: int,
                  reference_n: int, strength: float) -> np.ndarray:
    """The class shares q the matching aims for: the reference's, moved towards the sample's by <= z SE.

    Args:
        mean_probs: S x C average calibrated probabilities h of S samples.
        reference_shares: C (or S x C) average calibrated probabilities h_R on the reference.
        spread: C variances of the calibrated probabilities over the reference's items.
        n: Items per sample.
        reference_n: Items in the reference (its shares are noisy too).
        strength: z.
    """
    standard_error = np.sqrt(spread * (1.0 / n + 1.0 / reference_n))
    band = strength * standard_error
    target = reference_shares + np.clip(mean_probs - reference_shares, -band, band)
    target = np.maximum(target, SHARE_FLOOR)
    return target / target.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class _Matching:
    """Quantities of the matching objective at given log-weights, for S samples of the same n items."""

    objective: np.ndarray  # S: F(u)
    shares: np.ndarray  # S x C: matched class shares (1/n) sum_i c_i p'_i
    denominators: np.ndarray  # S x n: sum_c p_ic w_c (w = exp(u - max u))
    weights: np.ndarray  # S x C: w


def _evaluate(probs: np.ndarray, counts: np.ndarray, shift: np.ndarray, target: np.ndarray) -> _Matching:
    """The matching objective and shares at log-weights ``shift`` (see ``match_prior``)."""
    top = shift.max(axis=1, keepdims=True)
    weights = np.exp(shift - top)
    denominators = weights @ probs.T  # S x n
    n = counts.sum(axis=1)
    objective = ((counts * np.log(denominators)).sum(axis=1) / n + top[:, 0]
                 - (target * shift).sum(axis=1))
    shares = weights * ((counts / denominators) @ probs) / n[:, None]
    return _Matching(objective, shares, denominators, weights)


def match_prior(probs: np.ndarray, counts: np.ndarray, target: np.ndarray, start: np.ndarray | None = None,
                iterations: int = MATCH_ITERATIONS) -> np.ndarray:
    """Log class weights u that make the reweighted probabilities' class shares equal ``target``.

    Item i of sample s is counted ``counts[s, i]`` times (1 for the sample itself; bootstrap counts for a
    resample), so one n x C matrix serves every resample. With w = exp(u), the matched probabilities are
    p'_ic = p_ic w_c / sum_k p_ik w_k. The log-weights minimise the convex

        F(u) = (1/n) sum_i c_i log(sum_k p_ik exp(u_k)) - q.u,

    whose gradient is (matched shares - q). Damped Newton steps (Hessian diag(shares) - (1/n) sum_i c_i
    p'_i p'_i^T, plus 11^T/C for the direction that changes nothing) converge in a handful of iterations,
    also when one class holds nearly every item; converged samples drop out.

    Args:
        probs: n x C probabilities (rows sum to 1).
        counts: S x n non-negative item counts, each row summing to n.
        target: S x C class shares (rows sum to 1).
        start: S x C (or C) log-weights to start from, e.g. the whole sample's solution for its resamples.
        iterations: Newton steps at most.

    Returns:
        S x C log-weights (defined up to a constant per row).
    """
    probs = np.maximum(np.asarray(probs, dtype=np.float64), SHARE_FLOOR)
    samples, classes = target.shape
    shift = np.zeros((samples, classes)) if start is None else np.broadcast_to(start, target.shape).copy()
    state = _evaluate(probs, counts, shift, target)
    objective, shares = state.objective.copy(), state.shares.copy()
    denominators, weights = state.denominators.copy(), state.weights.copy()
    todo = np.arange(samples)  # samples still being matched
    for _ in range(iterations):
        gradient = shares[todo] - target[todo]
        keep = np.abs(gradient).max(axis=1) >= MATCH_TOLERANCE
        todo, gradient = todo[keep], gradient[keep]
        if not len(todo):
            break
        hessian = _hessian(probs, counts[todo], denominators[todo], weights[todo], shares[todo])
        step = -np.linalg.solve(hessian, gradient[..., None])
        scale = np.ones(len(todo))
        for _ in range(LINE_SEARCH_HALVINGS):  # halve the step where it would not lower the objective
            trial = shift[todo] + scale[:, None] * step[..., 0]
            state = _evaluate(probs, counts[todo], trial, target[todo])
            worse = state.objective > objective[todo] + 1e-10 * np.maximum(1.0, np.abs(objective[todo]))
            if not worse.any():
                break
            scale = np.where(worse, scale / 2.0, scale)
        better = ~worse  # a sample whose step still does not help is as close as Newton gets it: it stops
        todo = todo[better]
        shift[todo], objective[todo] = trial[better], state.objective[better]
        shares[todo] = state.shares[better]
        denominators[todo], weights[todo] = state.denominators[better], state.weights[better]
    return shift


def _hessian(probs: np.ndarray, counts: np.ndarray, denominators: np.ndarray, weights: np.ndarray,
             shares: np.ndarray) -> np.ndarray:
    """S x C x C: diag(shares) - (1/n) sum_i c_i p'_i p'_i^T + 11^T/C + ridge (``_evaluate``'s output)."""
    classes = probs.shape[1]
    item_weight = counts / denominators**2 / counts.sum(axis=1, keepdims=True)  # S x n
    second = np.matmul(probs.T[None] * item_weight[:, None, :], probs)  # S x C x C: sum_i a_i p_i p_i^T
    second *= weights[:, :, None] * weights[:, None, :]
    # + 11^T/C fixes the free constant; a tiny ridge keeps a class with no mass left solvable
    return np.eye(classes) * (shares[:, None, :] + RIDGE) - second + 1.0 / classes


def matched_prediction_probs(probs: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """S x n: the matched probability p'_{i, yhat_i} of each item's predicted class under each row of u."""
    probs = np.maximum(np.asarray(probs, dtype=np.float64), SHARE_FLOOR)
    predicted = probs.argmax(axis=1)
    weights = np.exp(shift - shift.max(axis=1, keepdims=True))
    return probs[np.arange(len(probs)), predicted][None] * weights[:, predicted] / (weights @ probs.T)


@register_estimator
class PriorMatchedATC(AccuracyEstimator):
    """ATC on probabilities matched to the model's reference class shares (see the module docstring)."""

    name = "pm-atc"
    description = ("ATC after pulling the model's class shares back to the reference's when the images "
                   "moved: catches a model that is confidently wrong on many images at once (ours)")

    def __init__(self, strength: float = DEFAULT_STRENGTH, gate_low: float = GATE_LOW,
                 gate_high: float = GATE_HIGH, level: float = DEFAULT_LEVEL, bootstrap: int = BOOTSTRAP,
                 seed: int = 0) -> None:
        """Args:
        strength: z, how many standard errors a class share may move before it counts as misplaced mass
            (0: match the reference shares exactly; larger: trust the model's class shares more).
        gate_low: Feature shift r (mean log-distance ratio, ``feature_shift``) below which the images
            count as unmoved and nothing is matched (the estimate is plain ATC).
        gate_high: r above which matching acts at full strength (z / gate in between).
        level: Two-sided coverage of the interval.
        bootstrap: Bootstrap replicates (each repeats the matching).
        seed: Seeds the bootstrap.
        """
        super().__init__(level=level, bootstrap=bootstrap, seed=seed)
        value, low, high = float(strength), float(gate_low), float(gate_high)
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"strength must be a number >= 0 (standard errors), got {strength!r}")
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ConfigError(f"gate_low must be below gate_high (log-distance ratios), got {gate_low!r} and "
                              f"{gate_high!r}")
        self.strength, self.gate_low, self.gate_high = value, low, high

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        probs = self.calibrated_probs(reference)
        correct = reference.preds == reference.labels
        self.reference_n = len(probs)
        self.shares = probs.mean(axis=0)
        # a class the model hardly ever predicts still gets the noise of one item
        self.spread = np.maximum(probs.var(axis=0), 1.0 / self.reference_n)
        # the reference is its own target (shift 0, gate 0): its matched scores are its plain scores
        scores = np.log(matched_prediction_probs(probs, np.zeros((1, self.num_classes)))[0])
        self.threshold = atc_threshold(scores, self.reference_accuracy)
        self.feature_shift = FeatureShift(reference.features, reference.preds, self.num_classes, self.seed)
        items = self.feature_shift.reference_items
        # the same fit on every resample of the reference, for the interval
        rows = self.reference_rows(len(probs))
        self.replicate_shares = np.stack([probs[row].mean(axis=0) for row in rows])
        self.replicate_thresholds = np.array([atc_threshold(scores[row], correct[row].mean())
                                              for row in rows])
        item_rows = self.reference_rows(len(items))
        self.item_base = float(items.mean())
        self.replicate_item_base = items[item_rows].mean(axis=1)
        self.fit_details = {"threshold": self.threshold, "strength": self.strength,
                            "gate": [self.gate_low, self.gate_high], "reference_shares": self.shares.tolist()}

    def matched_scores(self, probs: np.ndarray, counts: np.ndarray, shares: np.ndarray,
                       strength: np.ndarray, start: np.ndarray | None = None,
                       iterations: int = MATCH_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
        """Matched probabilities of the predicted classes (S x n) and the log class weights (S x C).

        Args:
            probs: n x C calibrated probabilities.
            counts: S x n item counts: one row per sample (ones for the items themselves).
            shares: C (or S x C) class shares of the model on the reference, to match towards.
            strength: S effective z per sample (inf: nothing is matched).
            start: Log-weights to start the matching from.
            iterations: Newton steps at most.
        """
        n = probs.shape[0]
        target = target_shares(counts @ probs / n, shares, self.spread, n, self.reference_n,
                               np.asarray(strength, dtype=np.float64)[:, None])
        shift = match_prior(probs, counts, target, start, iterations)
        return matched_prediction_probs(probs, shift), shift

    def _strength(self, feature_shift: np.ndarray) -> np.ndarray:
        """z / gate(r): infinite (no matching) while the features have not moved."""
        opened = gate(feature_shift, self.gate_low, self.gate_high)
        with np.errstate(divide="ignore"):
            return np.where(opened > 0, self.strength / np.maximum(opened, 1e-12), np.inf)

    def _chunks(self, replicates: int, n: int) -> list[tuple[int, int]]:
        size = max(1, CHUNK_ELEMENTS // (n * self.num_classes))
        return [(start, min(start + size, replicates)) for start in range(0, replicates, size)]

    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
        probs = self.calibrated_probs(sample)
        n = len(probs)
        items = self.feature_shift.item_scores(sample.features, sample.preds)
        feature_shift = float(items.mean()) - self.item_base
        strength = self._strength(np.array([feature_shift]))
        scores, shift = self.matched_scores(probs, np.ones((1, n)), self.shares, strength)
        accuracy = float((np.log(scores[0]) > self.threshold).mean())
        replicates = np.empty(self.bootstrap)
        rows = self.sample_rows(n)
        replicate_strength = self._strength(items[rows].mean(axis=1) - self.replicate_item_base)
        for start, stop in self._chunks(self.bootstrap, n):
            counts = _counts(rows[start:stop], n)
            resampled, _ = self.matched_scores(probs, counts, self.replicate_shares[start:stop],
                                               replicate_strength[start:stop], start=shift,
                                               iterations=RESAMPLE_ITERATIONS)
            above = np.log(resampled) > self.replicate_thresholds[start:stop, None]
            replicates[start:stop] = (above * counts).sum(axis=1) / n
        low, high = self.interval(accuracy, replicates)
        unmatched = float((np.log(probs.max(axis=1)) > self.threshold).mean())
        class_shift = 0.5 * float(np.abs(probs.mean(axis=0) - self.shares).sum())
        return accuracy, low, high, {"threshold": self.threshold, "unmatched_atc": unmatched,
                                     "matched": accuracy - unmatched, "class_shift": class_shift,
                                     "feature_shift": feature_shift,
                                     "gate": float(gate(feature_shift, self.gate_low, self.gate_high)),
                                     "class_weights": np.exp(shift[0] - shift[0].max()).tolist()}


def _counts(rows: np.ndarray, n: int) -> np.ndarray:
    """S x n: how often each item appears in each resample (S x n row numbers)."""
    counts = np.zeros((len(rows), n))
    np.add.at(counts, (np.repeat(np.arange(len(rows)), rows.shape[1]), rows.ravel()), 1.0)
    return counts
