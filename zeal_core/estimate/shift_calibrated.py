"""Shift-calibrated confidence (ours): a per-image correctness model learnt from the shift bank.

Temperature scaling calibrates the model on clean data only; under a shift its confidence means something
else. The shift bank shows how it changes: the same reference images under every corruption, labels known.
This estimator learns, on the bank and the clean reference, the probability that an image is classified
correctly from label-free signals of the image and of the batch it came in (``correctness``):

    P(correct_i) = sigmoid(w . z_i),   z_i = standardised [ logit c_i,  s_i,  s_i logit c_i ],

c_i the calibrated confidence, s_i = log(h_{yhat_i} / h_R,yhat_i) how over-predicted the image's class is
in this batch. The estimate is the mean over the sample of P(correct_i), each capped by the share of its
class's predictions that can be right at all if the classes kept their reference shares (the
over-prediction cap of ``correctness``), as far as the feature-shift gate says the images moved. Two
batch-level signals we tried as well (the batch's confidence drop, as in DoC, and the negative entropy)
did not lower the error on held-out corruptions and extrapolated badly from a small bank; a per-image
nearest-neighbour distance barely changed the error on held-out families: all left out.

Fitting: logistic regression (Newton's method, ridge 1 on the standardised weights) on every bank image
and every clean reference image, each seen in batches of 50, 100 and 250 images and in its whole shifted
set, so that the batch signals are learnt at the noise levels of small and large samples.

Interval: a percentile bootstrap over the sample's items (batch signals, cap and gate recomputed per
resample), widened in quadrature by the estimator's own error on shift families it was not fitted on:
``family_spread``, the root-mean-square error over the bank's shifts when each family (noise, blur,
weather, digital, ...) is predicted by a fit without it. Where the sample lies far from every bank shift
(its batch summary, ``correctness.batch_summary``, is farther from the nearest bank shift than
``REACH_QUANTILE`` of the bank's shifts (and the clean reference) are from the nearest shift of another
family, allowing for the sample's own noise; a batch surer than the clean reference is not far for that),
the estimate is an extrapolation: the widening doubles and the estimate says so
(``AccuracyEstimate.extrapolation``). ``fit_spread`` (corruptions left out in ``folds`` groups) is
reported beside it: the error on kinds like those in the bank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.corruptions import corruption_info
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
from zeal_core.estimate.correctness import (
    CAP_Z,
    FEATURES,
    ItemSignals,
    batch_summary,
    features,
    fit_logistic,
    prediction_caps,
    sigmoid,
)
from zeal_core.estimate.feature_shift import FeatureShift, gate
from zeal_core.estimate.prior_matched import GATE_HIGH, GATE_LOW
from zeal_core.estimate.splits import bank_corruptions

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet

BATCH_SIZES = (50, 100, 250)  # batch sizes the training images are grouped in (plus each whole set)
FOLDS = 5  # corruption groups for the in-bank fit-error estimate
REACH_QUANTILE = 0.9  # bank shifts closer to another family than this share: the bank's reach
FAR_FACTOR = 2.0  # the family spread is multiplied by this for an extrapolation
SUMMARY_FLOOR = 1e-3  # smallest scale of a batch-summary coordinate across the bank


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
        folds: Corruption groups for the in-bank fit error (0: no widening, no family error, no reach).
        level: Two-sided coverage of the interval.
        bootstrap: Bootstrap replicates.
        seed: Seeds the batch grouping of the training images and the bootstrap.
        """
        super().__init__(level=level, bootstrap=bootstrap, seed=seed)
        from zeal_core.validate import check_int

        self.folds = check_int(folds, "folds", 0, 100)

    def _signals(self, embeddings: Embeddings) -> ItemSignals:
        assert self.calibration is not None
        items = self.feature_shift.item_scores(embeddings.features, embeddings.preds) - self.item_base
        return ItemSignals(self.calibration.log_probs(logits_of(embeddings)), items)

    def _training_rows(self, sets: list[tuple[ItemSignals, np.ndarray]], rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Features and correctness of every image of ``sets``, in random batches of each size."""
        rows, targets = [], []
        for signals, correct in sets:
            n = len(correct)
            for size in [*(size for size in BATCH_SIZES if size < n), n]:
                order = rng.permutation(n)
                for start in range(0, n - size + 1, size):
                    batch = order[start:start + size]
                    rows.append(features(signals.take(batch), np.ones((1, size)), self.shares)[0])
                    targets.append(correct[batch])
        return np.concatenate(rows), np.concatenate(targets)

    def _fit_sets(self, sets: list[tuple[ItemSignals, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        design, correct = self._training_rows(sets, np.random.default_rng(self.seed))
        return fit_logistic(design, correct)

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        probs = self.calibrated_probs(reference)
        labels = np.asarray(reference.labels, dtype=np.int64)
        self.shares = probs.mean(axis=0)
        self.confidence = float(probs.max(axis=1).mean())
        self.class_shares = np.bincount(labels, minlength=self.num_classes)[:self.num_classes] / len(labels)
        self.reference_n = len(labels)
        self.feature_shift = FeatureShift(reference.features, reference.preds, self.num_classes, self.seed)
        self.item_base = float(self.feature_shift.reference_items.mean())
        for shifted in bank:
            if shifted.embeddings.labels is None:
                raise ConfigError(f"bank shift {shifted.spec.text} has no labels: build the bank with labels")
        clean = (self._signals(reference), (reference.preds == labels).astype(np.float64))
        sets = {shifted.spec.text: (self._signals(shifted.embeddings), _correct(shifted.embeddings))
                for shifted in bank}
        self.model = self._fit_sets([clean, *sets.values()])
        self.fit_spread, self.family_spread = 0.0, 0.0
        self.bank_summaries, self.summary_scale = np.zeros((0, 3)), np.ones(3)
        self.clean_summary = np.zeros(3)
        self.reach, self.family_residuals = float("inf"), {}
        if self.folds:
            self._fit_errors(bank, clean, sets)
        weights = dict(zip(("intercept", *FEATURES), self.model[0].tolist(), strict=True))
        self.fit_details = {"weights": weights, "bank_shifts": len(bank), "fit_spread": self.fit_spread,
                            "family_spread": self.family_spread, "family_residuals": self.family_residuals,
                            "reach": self.reach, "folds": self.folds}

    def _fit_errors(self, bank: list[ShiftedSet], clean: tuple[ItemSignals, np.ndarray],
                    sets: dict[str, tuple[ItemSignals, np.ndarray]]) -> None:
        """In-bank and held-out-family errors, and the bank's reach in batch-summary space."""
        kinds = {shifted.spec.text: shifted.corruption for shifted in bank}
        families = {text: _family(kind) for text, kind in kinds.items()}
        names = bank_corruptions(bank)
        order = np.random.default_rng(self.seed).permutation(len(names))
        groups = min(self.folds, len(names))
        corruption_folds = [{names[index] for index in order[group::groups]} for group in range(groups)]
        in_bank = self._held_out_residuals(clean, sets, [{text for text in sets if kinds[text] in held}
                                                        for held in corruption_folds] if groups > 1 else [])
        family_names = sorted(set(families.values()))
        by_family = [{text for text in sets if families[text] == family} for family in family_names]
        held_family = self._held_out_residuals(clean, sets, by_family if len(family_names) > 1 else [])
        self.fit_spread = _rms(in_bank.values())
        self.family_spread = max(_rms(held_family.values()), self.fit_spread)
        self.family_residuals = {family: _rms(held_family[text] for text in group)
                                 for family, group in zip(family_names, by_family, strict=True)
                                 if held_family}
        # the clean reference is a point of the bank's reach too (family "clean")
        self.clean_summary = batch_summary(clean[0], self.shares)
        summaries = np.stack([self.clean_summary, *(batch_summary(signals, self.shares)
                                                    for signals, _ in sets.values())])
        self.bank_summaries = summaries
        self.summary_scale = np.maximum(summaries.std(axis=0), SUMMARY_FLOOR)
        text_families = np.asarray(["clean", *(families[text] for text in sets)])
        nearest_other = [self._distance(summary, text_families != family)
                         for summary, family in zip(summaries, text_families, strict=True)]
        finite = [value for value in nearest_other if np.isfinite(value)]
        self.reach = float(np.quantile(finite, REACH_QUANTILE)) if finite else float("inf")

    def _held_out_residuals(self, clean: tuple[ItemSignals, np.ndarray],
                            sets: dict[str, tuple[ItemSignals, np.ndarray]],
                            held_groups: list[set[str]]) -> dict[str, float]:
        """Estimate minus truth of every held-out whole set, from a fit without its group."""
        residuals = {}
        for held in held_groups:
            model = self._fit_sets([clean, *(value for text, value in sets.items() if text not in held)])
            for text in held:
                signals, correct = sets[text]
                estimate = self._predict(signals, np.ones((1, len(correct))), model)[0]
                residuals[text] = float(estimate - correct.mean())
        return residuals

    def _distance(self, summary: np.ndarray, among: np.ndarray | None = None) -> float:
        """Scaled distance from a batch summary to the nearest bank shift (of those in ``among``)."""
        chosen = self.bank_summaries if among is None else self.bank_summaries[among]
        if not len(chosen):
            return float("inf")
        return float(np.sqrt((((chosen - summary) / self.summary_scale) ** 2).sum(axis=1)).min())

    def _predict(self, signals: ItemSignals, counts: np.ndarray,
                 model: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Estimated accuracy of S batches (counts over the items): mean capped P(correct) of each."""
        weights, mean, scale = model if model is not None else self.model
        n = counts.shape[1]
        design = (features(signals, counts, self.shares) - mean) / scale
        probability = sigmoid(weights[0] + design @ weights[1:])
        caps = prediction_caps(signals, counts, self.class_shares, self.reference_n, CAP_Z)
        opened = gate(counts @ signals.shift_items / n, GATE_LOW, GATE_HIGH)[:, None]
        probability = (1 - opened) * probability + opened * np.minimum(probability, caps)
        return (probability * counts).sum(axis=1) / n

    def _reach_test(self, signals: ItemSignals) -> tuple[float, float]:
        """The sample's distance to the nearest bank shift, and the reach it is compared with: the bank's,
        plus two standard errors of the sample's own summary (a small sample scatters around its stream)."""
        summary = batch_summary(signals, self.shares)
        # a batch "cleaner" than the clean reference (surer, less over-predicted, nearer its neighbours) is
        # not outside the bank in any way that matters: those coordinates count as the reference's
        summary = np.array([min(summary[0], self.clean_summary[0]), max(summary[1], self.clean_summary[1]),
                            max(summary[2], self.clean_summary[2])])
        n = len(signals.predicted)
        values = features(signals, np.ones((1, n)), self.shares)[0]
        item_sd = np.array([values[:, 0].std(), values[:, 1].std(), signals.shift_items.std()])
        noise = float(np.sqrt(((item_sd / np.sqrt(n) / self.summary_scale) ** 2).sum()))
        return self._distance(summary), float(np.hypot(self.reach, 2.0 * noise))

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
        distance, reach = self._reach_test(signals) if self.folds else (0.0, float("inf"))
        extrapolation = bool(distance > reach)
        spread = self.family_spread * (FAR_FACTOR if extrapolation else 1.0)
        low, high = widen_interval(accuracy, low, high, spread, self.level)
        shares = signals.probs.mean(axis=0)
        return accuracy, low, high, {
            "sampling_interval": list(sampling), "fit_spread": self.fit_spread,
            "family_spread": self.family_spread, "spread_used": spread, "extrapolation": extrapolation,
            "far_spread": self.family_spread * FAR_FACTOR, "family_residuals": self.family_residuals,
            "bank_distance": distance, "bank_reach": reach,
            "feature_shift": float(signals.shift_items.mean()),
            "cap_gate": float(gate(signals.shift_items.mean(), GATE_LOW, GATE_HIGH)),
            "class_shift": 0.5 * float(np.abs(shares - self.shares).sum()),
            "confidence_drop": float(signals.confidence.mean()) - self.confidence}


def _correct(embeddings: Embeddings) -> np.ndarray:
    return (embeddings.preds == embeddings.labels).astype(np.float64)


def _rms(values: Any) -> float:
    array = np.asarray(list(values), dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(array)))) if len(array) else 0.0


def _family(kind: str) -> str:
    try:
        return corruption_info(kind).family
    except ConfigError:
        return "other"
