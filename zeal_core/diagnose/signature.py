"""The "signature" diagnoser: known shifts' signatures in set statistics, a calibrated gate and rejection.

Fit (reference R with labels, bank = R under every corruption x severity):

1. Per-image raw statistics (features, entropy, max prob, log feature norm, logsumexp) and a Fisher
   discriminant projection to K coordinates (``statistics``); per hypothesis (clean, corruption c at
   severity s, interpolated between the bank's levels) the mean, covariance and class-wise means of the
   statistics and the confusion matrix (``signatures``).
2. Calibration by cross-fitting (``crossfit``, ``calibration``): the reference rows are split into two
   random halves; a model fitted on one fold scores random subsets of the other fold's images (clean,
   label-shifted with Dirichlet(1) class priors, every bank set, and every family's sets under signatures
   fitted without that family) at several sample sizes. From these held-out subsets: the label-shift
   threshold T_LS and covariate threshold T_cov (quantiles of the clean subsets' statistics at
   1 - false_alarm / 2 each), the temperature τ of the cause posterior (least negative log-likelihood of
   the true cause, per size, interpolated in log n), the threshold of the label-shift assumption check
   (``assumption``) and the unknown rule (``rejection``).
3. The final model is fitted on all reference rows.

Diagnose (sample S, labels never used): with ℓ_h(π_ref), ℓ_h(π̂_h) from ``SignatureTable.evaluate`` and
a label-shift penalty p = T_LS / 2, the causes get the scores

    a_no_drift    = ℓ_clean(π_ref) + T_cov / 2
    a_label_shift = ℓ_clean(π̂) - p + T_cov / 2
    a_c           = max over s of max(ℓ_(c,s)(π_ref), ℓ_(c,s)(π̂) - p)

so that label shift beats no drift exactly when D_LS = 2(ℓ_clean(π̂) - ℓ_clean(π_ref)) > T_LS, and a
corruption beats both exactly when D_cov = 2(max_c a_c - max(ℓ_clean(π_ref), ℓ_clean(π̂) - p)) > T_cov.
``Cause.score`` = (1 - ε) softmax(τ a) + ε / K: a calibrated posterior over the causes (no drift, label
shift, every corruption). With ``drift_detected=True`` no drift is left out, and when D_LS <= T_LS the
label shift also loses its T_cov / 2 head start (the best-fitting signature then names the drift).

Label shift is a candidate only while its assumption holds: when the images moved away from the reference
images of their predicted class (``assumption``), a changed prediction histogram is a covariate shift that
collapses predictions, and label shift leaves the candidates. When the winner is a corruption, the unknown
rule (``rejection``: its family's support and its misfit) decides whether its name is worth giving; a drift
the detectors assert while no drift fits best is unknown too. Then the verdict is "unknown shift", the
"unknown" cause comes first with score u = 1/2 + (how far past the rule's thresholds) / 2 (> 0.5), and the
known causes follow as weak hints with their scores multiplied by 1 - u. The estimated severity of c is its
maximising s (refined by a parabola through the grid neighbours), among full-share hypotheses unless a
partial share fits clearly better. When the caller's detectors overrule the scores (``drift_detected``
False while a drift cause scores highest, or True while no drift does), ``details["overruled"]`` says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from zeal_core.corruptions import corruption_info
from zeal_core.diagnose.assumption import LabelShiftCheck
from zeal_core.diagnose.base import (
    FAMILY_OF,
    LABEL_SHIFT,
    NO_DRIFT,
    UNKNOWN,
    Cause,
    Diagnoser,
    Diagnosis,
    register_diagnoser,
)
from zeal_core.diagnose.calibration import (
    cause_scores,
    gate_thresholds,
    pool_parts,
    posterior,
    random_folds,
    summarise,
    temperatures_by_size,
)
from zeal_core.diagnose.crossfit import CrossFit, Source
from zeal_core.diagnose.rejection import UnknownRule, rule_features
from zeal_core.diagnose.signature_table import CLEAN, SignatureTable
from zeal_core.diagnose.statistics import Projection, raw_statistics
from zeal_core.drift.base import single_threaded_blas
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.shifts import ShiftedSet
from zeal_core.validate import check_int

# A partial share (f < 1) names the severity only when it beats the best full-share hypothesis by more than
# this log-likelihood (half a chi-square(1) 95 % quantile): a mixture has an extra parameter, and a
# stronger corruption on part of the images otherwise mimics a weaker one on all of them (fog:3 read as
# fog 4.8 on 75 % of the images).
PARTIAL_PENALTY = 1.92


@dataclass(frozen=True)
class SignatureConfig:
    """Settings of the signature diagnoser (``create_diagnoser("signature", **options)``)."""

    components: int = 32  # K, discriminant coordinates per image (at most the number of bank sets)
    spread_components: int = 8  # k <= K, coordinates whose squared deviation from clean is also used
    shrinkage: float = 0.9  # in [0, 1], pull of the within-group covariance towards its diagonal
    severity_step: float = 0.25  # severity grid step; the bank's own levels are always on the grid
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # shares of corrupted images covered (1 always)
    false_alarm: float = 0.04  # share of clean samples the own gate may call drifted (half per statistic)
    unknown_recall: float = 0.8  # share of held-out-family subsets the unknown rule must call "unknown"
    label_shift_false_reject: float = 0.01  # share of true label shifts the assumption check may reject
    bbse_ridge: float = 1.0  # BBSE ridge towards the reference prior: λ = bbse_ridge / n
    calibration_sizes: tuple[int, ...] = (25, 50, 100, 200)  # held-out subset sizes (up to half a fold)
    calibration_splits: int = 3  # random halvings of the reference; each gives two fold models
    unknown_splits: int = 1  # of those, halvings that also score every family left out (the unknown rule)
    clean_trials: int = 50  # clean held-out subsets per size and fold model (sets the gate's thresholds)
    label_shift_trials: int = 15  # label-shifted clean subsets per size and fold model (temperature)
    shift_trials: int = 1  # subsets per bank set, size and fold model (temperature, unknown rule)

    def __post_init__(self) -> None:
        check_int(self.components, "components", 1, 512)
        check_int(self.spread_components, "spread_components", 0, int(self.components))
        for name, low, high in (("shrinkage", 0.0, 1.0), ("false_alarm", 1e-4, 0.5),
                                ("unknown_recall", 0.0, 1.0), ("label_shift_false_reject", 0.0, 0.5),
                                ("severity_step", 0.01, 5.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= float(value) <= high:
                raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if not isinstance(self.bbse_ridge, (int, float)) or not 0.0 <= float(self.bbse_ridge) < 1e6:
            raise ConfigError(f"bbse_ridge must be a number >= 0, got {self.bbse_ridge!r}")
        sizes = tuple(self.calibration_sizes)
        if not sizes:
            raise ConfigError("calibration_sizes needs at least one sample size")
        for size in sizes:
            check_int(size, "calibration_sizes entry", 2)
        object.__setattr__(self, "calibration_sizes", tuple(sorted(int(size) for size in set(sizes))))
        shares = tuple(self.fractions)
        if not all(isinstance(share, (int, float)) and 0.0 < float(share) <= 1.0 for share in shares):
            raise ConfigError(f"fractions must be numbers in (0, 1], got {self.fractions!r}")
        object.__setattr__(self, "fractions", tuple(sorted({float(share) for share in shares} | {1.0})))
        for name in ("calibration_splits", "clean_trials", "label_shift_trials", "shift_trials"):
            check_int(getattr(self, name), name, 1, 100_000)
        check_int(self.unknown_splits, "unknown_splits", 0, 100_000)


@dataclass(frozen=True)
class Calibration:
    """What the held-out subsets gave: the gate's thresholds (pooled over sizes, since the statistics are
    log-likelihood ratios whose null distribution hardly depends on n) and one temperature per size (how
    much to trust the likelihoods does depend on n)."""

    label_shift_threshold: float  # T_LS
    covariate_threshold: float  # T_cov
    sizes: tuple[int, ...]  # calibrated sample sizes
    temperatures: tuple[float, ...]  # τ per size
    held_out: tuple[dict[str, float], ...]  # per size: accuracy on the held-out subsets


@register_diagnoser
class SignatureDiagnoser(Diagnoser):
    """Signatures of the bank's shifts in set statistics; BBSE for label shift; calibrated gate/rejection."""

    name = "signature"
    description = ("names the corruption (with severity), a label shift or no drift from set statistics of "
                   "features and confidences, calibrated on held-out bank subsets; 'unknown shift' when no "
                   "known one fits clearly")

    def __init__(self, **options: Any) -> None:
        """Args:
        **options: Fields of ``SignatureConfig`` (unknown names are a ConfigError listing the known ones).
        """
        super().__init__()
        known = {item.name for item in fields(SignatureConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"diagnoser 'signature': unknown option(s) {unknown}; known: {sorted(known)}")
        self.config = SignatureConfig(**options)
        self._projection: Projection | None = None
        self._table: SignatureTable | None = None
        self._calibration: Calibration | None = None
        self._check: LabelShiftCheck | None = None
        self._rule: UnknownRule | None = None
        self._families: dict[str, str] = {}
        self.fit_report: dict[str, Any] = {}

    # Fitting ----------------------------------------------------------------------------------------------

    def _fit(self, reference: Embeddings, bank: tuple[ShiftedSet, ...], seed: int) -> None:
        config = self.config
        rng = np.random.default_rng(seed)
        labels = np.asarray(reference.labels, dtype=np.int64)
        classes = reference.probs.shape[1]
        self._families = {shifted.corruption: _family(shifted.corruption) for shifted in bank}
        with single_threaded_blas():
            sources = [_source(CLEAN, "", 0.0, reference)] + [
                _source(shifted.corruption, self._families[shifted.corruption], shifted.severity,
                        shifted.embeddings) for shifted in bank]
            components = min(config.components, len(sources) - 1)
            crossfit = CrossFit(sources, labels, classes, config, components,
                                min(config.spread_components, components))
            parts, cases, full_projection = [], [], None
            for split in range(config.calibration_splits):
                fold = random_folds(len(labels), rng)
                moments = crossfit.moments(fold)
                if full_projection is None:
                    full_projection = moments.projection([0, 1], components, config.shrinkage)
                for model in (0, 1):
                    known, rule_cases = crossfit.fold_model(moments, fold, model, rng,
                                                            unseen=split < config.unknown_splits)
                    parts.append(known)
                    cases += rule_cases
            self._projection = full_projection
            self._table = crossfit.table(full_projection, np.arange(len(labels)))
            self._check = LabelShiftCheck.fit(reference.features, reference.preds, classes, seed)
            self._calibrate(pool_parts(parts), cases)
        self.fit_report = self._report(len(labels), len(bank), components)

    def _calibrate(self, by_size: dict[int, dict[str, np.ndarray]], cases: list[dict[str, Any]]) -> None:
        """Thresholds, temperatures, the assumption check's threshold and the unknown rule."""
        config = self.config
        pooled = {key: np.concatenate([data[key] for data in by_size.values()])
                  for key in next(iter(by_size.values()))}
        label_threshold, covariate_threshold = gate_thresholds(pooled, config.false_alarm)
        temperatures, held_out = temperatures_by_size(by_size, list(self._table.corruptions), label_threshold,
                                                      covariate_threshold)
        self._calibration = Calibration(label_shift_threshold=label_threshold,
                                        covariate_threshold=covariate_threshold, sizes=tuple(by_size),
                                        temperatures=tuple(temperatures), held_out=tuple(held_out))
        null = np.isin(pooled["truths"], [NO_DRIFT, LABEL_SHIFT])
        self._check.calibrate(pooled["feature_z"][null], config.label_shift_false_reject)
        rows = [self._rule_rows(case, label_threshold) for case in cases if len(case["truth_family"])]
        features = np.concatenate([row[0] for row in rows])
        wrong = np.concatenate([row[1] for row in rows])
        unseen = np.concatenate([row[2] for row in rows])
        self._rule = UnknownRule.fit(features, wrong, unseen, config.unknown_recall)
        rejected = self._rule.reject(features)
        self._rule_summary = {
            "unseen_cases": int(unseen.sum()), "known_cases": int((~unseen).sum()),
            "known_called_unknown": float(rejected[~unseen].mean()) if (~unseen).any() else None,
            "known_wrong_family_named": float((~rejected & wrong & ~unseen).sum() / max((~unseen).sum(), 1))}

    def _rule_rows(self, case: dict[str, Any], label_threshold: float) -> tuple[np.ndarray, ...]:
        scores = np.maximum(case["best_reference"], case["best_estimated"] - label_threshold / 2)
        temperature = self._at_size(case["size"])[2]
        features, best = rule_features(scores, case["corruption_distance"], case["families"], temperature,
                                       case["dims"], case["size"], case["rows"])
        unseen = np.full(len(features), case["unseen"])
        wrong = unseen | (case["families"][best] != case["truth_family"])
        return features, wrong, unseen

    def _report(self, images: int, bank_sets: int, components: int) -> dict[str, Any]:
        calibration = self._calibration
        return {
            "reference_images": images, "bank_sets": bank_sets, "components": components,
            "hypotheses": len(self._table.kinds), "corruptions": list(self._table.corruptions),
            "label_shift_threshold": calibration.label_shift_threshold,
            "covariate_threshold": calibration.covariate_threshold,
            "label_shift_check": {"threshold": self._check.threshold, "min_effect": self._check.min_effect},
            "unknown_rule": {**self._rule.to_dict(), **self._rule_summary},
            "calibration": [{"n": size, "temperature": tau, **held_out} for size, tau, held_out
                            in zip(calibration.sizes, calibration.temperatures, calibration.held_out,
                                   strict=True)],
            "config": asdict(self.config)}

    # Diagnosing -------------------------------------------------------------------------------------------

    def _diagnose(self, sample: Embeddings, drift_detected: bool | None) -> Diagnosis:
        table, projection, config = self._table, self._projection, self.config
        assert table is not None and projection is not None and self._check is not None
        n = len(sample)
        classes = table.prior.shape[0]
        with single_threaded_blas():
            expanded = table.expand(projection(_raw(sample)))
            counts = np.bincount(np.asarray(sample.preds, np.int64), minlength=classes)[:classes]
            mean_probs = np.asarray(sample.probs, dtype=np.float64).mean(0)
            evaluation = table.evaluate(expanded.mean(0)[None], counts[None].astype(np.float64),
                                        mean_probs[None], n, config.bbse_ridge)
            check = self._check.test(sample.features, sample.preds)
        label_threshold, covariate_threshold, temperature = self._at_size(n)
        summary = {key: value[0] for key, value in summarise(table, evaluation).items()}
        scores = cause_scores({key: value[None] for key, value in summary.items()}, label_threshold,
                              covariate_threshold)[0]
        label_statistic = float(2 * (summary["clean_estimated"] - summary["clean_reference"]))
        if drift_detected is True and label_statistic <= label_threshold:
            # Drift is asserted but the class mix did not change significantly: label shift loses the
            # head start it has over no drift, and the best-fitting shift signature names the drift.
            scores = scores.copy()
            scores[1] -= covariate_threshold / 2
        allowed = np.ones(len(scores), dtype=bool)
        allowed[0] = drift_detected is not True
        allowed[1] = bool(check["holds"])  # p(x | y) moved: whatever changed the predictions, not the mix
        winner = int(np.argmax(np.where(allowed, scores, -np.inf)))
        unrestricted = allowed.copy()
        unrestricted[0] = True  # what the scores say without the detectors' decision
        free_winner = int(np.argmax(np.where(unrestricted, scores, -np.inf)))
        probabilities = posterior(scores, temperature, allowed)
        penalty = label_threshold / 2
        combined = np.maximum(evaluation.at_reference_prior[0], evaluation.at_estimated_prior[0] - penalty)
        uses_prior = evaluation.at_estimated_prior[0] - penalty > evaluation.at_reference_prior[0]
        causes = [NO_DRIFT, LABEL_SHIFT, *table.corruptions]
        statistics = {
            "label_shift_statistic": label_statistic, "label_shift_threshold": label_threshold,
            "covariate_statistic": float(2 * (scores[2:].max() - max(summary["clean_reference"],
                                                                     summary["clean_estimated"] - penalty))),
            "covariate_threshold": covariate_threshold, "distance": float(summary["distance"]),
            "temperature": temperature, "label_shift_check": check}
        cause_list = sorted((self._cause(kind, float(probabilities[index]), table, combined, uses_prior,
                                         evaluation, statistics)
                             for index, kind in enumerate(causes) if allowed[index]),
                            key=lambda cause: -cause.score)
        support, misfit, rejected, strength = self._unknown_test(scores, summary, temperature, n)
        statistics.update(family_support=support, misfit=misfit, unknown_rule=self._rule.to_dict())
        verdict = {0: "no drift", 1: "label shift"}.get(winner, "covariate shift")
        if drift_detected is False:
            verdict = "no drift"
        elif winner >= 2 and (rejected or free_winner == 0):
            # no known shift fits clearly enough to be named, or the detectors found a drift that every
            # known shift explains worse than no drift at all: what they found is unknown here
            verdict = "unknown shift"
        free_probabilities = posterior(scores, temperature, unrestricted)
        # u > 0.5 when the verdict is unknown: the farther past the rule's thresholds (or the more no drift
        # fits best), the surer
        unknown_score = 0.5 + 0.5 * max(strength if free_winner else float(free_probabilities[0]), 0.02)
        cause_list = _rank_for_verdict(cause_list, verdict, unknown_score, statistics)
        best_hypothesis = self._best_hypothesis(causes[winner], combined, np.asarray(table.kinds))
        details: dict[str, Any] = {"statistics": statistics, "method": "signature"}
        overruled = _overruled(drift_detected, free_winner, causes, free_probabilities)
        if overruled:
            details["overruled"] = overruled
        if verdict in ("covariate shift", "unknown shift"):
            details["image_scores"] = table.image_scores(expanded, best_hypothesis)
        return Diagnosis(causes=tuple(cause_list), verdict=verdict,
                         estimated_class_proportions=_as_shares(evaluation.priors[0, best_hypothesis],
                                                                table.prior > 0),
                         reference_class_proportions=_as_shares(table.prior, table.prior > 0),
                         details=details)

    def _unknown_test(self, scores: np.ndarray, summary: dict[str, Any], temperature: float,
                      len_sample: int) -> tuple[float, float, bool, float]:
        """The best corruption's family support and misfit, whether the unknown rule rejects it, and how
        far past its thresholds it is."""
        table = self._table
        families = np.asarray([self._families.get(kind, "other") for kind in table.corruptions])
        features, _ = rule_features(scores[None, 2:], np.asarray(summary["corruption_distance"])[None],
                                    families, temperature, table.means.shape[1], len_sample, table.rows)
        return (float(features[0, 0]), float(features[0, 1]), bool(self._rule.reject(features)[0]),
                float(self._rule.strength(features)[0]))

    def _cause(self, kind: str, score: float, table: SignatureTable, combined: np.ndarray,
               uses_prior: np.ndarray, evaluation: Any, statistics: dict) -> Cause:
        if kind == NO_DRIFT:
            return Cause(kind, FAMILY_OF[kind], score, None,
                         {"covariate_statistic": statistics["covariate_statistic"],
                          "covariate_threshold": statistics["covariate_threshold"]})
        if kind == LABEL_SHIFT:
            return Cause(kind, FAMILY_OF[kind], score, None,
                         {"statistic": statistics["label_shift_statistic"],
                          "threshold": statistics["label_shift_threshold"],
                          "assumption_holds": statistics["label_shift_check"]["holds"]})
        rows = np.flatnonzero(np.asarray(table.kinds) == kind)
        best = _severity_hypothesis(rows, combined, table.fractions)
        fraction = float(table.fractions[best])
        ladder = rows[table.fractions[rows] == fraction]
        severity = _refine_severity(table.severities[ladder], combined[ladder])
        distance = float(np.minimum(evaluation.distance_reference[0, rows],
                                    evaluation.distance_estimated[0, rows]).min())
        return Cause(kind, self._families.get(kind, "other"), score, severity,
                     {"log_likelihood": float(combined[best]), "grid_severity": float(table.severities[best]),
                      "fraction": fraction, "class_mix_changed": bool(uses_prior[best]),
                      "distance": distance})

    @staticmethod
    def _best_hypothesis(cause: str, combined: np.ndarray, kinds: np.ndarray) -> int:
        if cause in (NO_DRIFT, LABEL_SHIFT):
            return 0
        rows = np.flatnonzero(kinds == cause)
        return int(rows[int(np.argmax(combined[rows]))])

    def _at_size(self, n: int) -> tuple[float, float, float]:
        """Thresholds and the temperature (interpolated in log n, constant beyond the calibrated sizes)."""
        calibration = self._calibration
        assert calibration is not None
        temperature = float(np.exp(np.interp(np.log(n), np.log(calibration.sizes),
                                             np.log(calibration.temperatures))))
        return calibration.label_shift_threshold, calibration.covariate_threshold, temperature


def _rank_for_verdict(causes: list[Cause], verdict: str, unknown_score: float,
                      statistics: dict[str, Any]) -> list[Cause]:
    """The causes in the order a reader should see them: the verdict's own cause first.

    For "unknown shift" an ``unknown`` cause leads and the known ones follow as weak hints (scores times
    1 - u, ``details["hint"]``); for "no drift" the no-drift cause leads (the detectors may have overruled
    the scores: ``details["overruled"]`` says so); otherwise the order of the scores, which then has the
    verdict's cause first (the verdict is the best-scoring allowed cause, and the scores are a posterior
    over the allowed causes).
    """
    if verdict == "unknown shift":
        unknown = Cause(UNKNOWN, FAMILY_OF[UNKNOWN], unknown_score, None,
                        {"family_support": statistics["family_support"], "misfit": statistics["misfit"],
                         "distance": statistics["distance"]})
        weak = 1 - unknown_score
        hints = [replace(cause, score=cause.score * weak, details={**cause.details, "hint": True})
                 for cause in causes if cause.kind != NO_DRIFT]
        return [unknown, *hints]
    if verdict == "no drift":
        return sorted(causes, key=lambda cause: cause.kind != NO_DRIFT)
    return causes


def _overruled(drift_detected: bool | None, free_winner: int, causes: list[str],
               probabilities: np.ndarray) -> dict[str, Any] | None:
    """What the scores alone favoured when the caller's detectors decided otherwise, else None."""
    if drift_detected is False and free_winner != 0:
        return {"by": "detectors", "detectors_say": "no drift", "scores_favour": causes[free_winner],
                "score": float(probabilities[free_winner])}
    if drift_detected is True and free_winner == 0:
        return {"by": "detectors", "detectors_say": "drift", "scores_favour": NO_DRIFT,
                "score": float(probabilities[0])}
    return None


def _severity_hypothesis(rows: np.ndarray, combined: np.ndarray, fractions: np.ndarray) -> int:
    """The hypothesis of a corruption that names its severity: the best full-share one, unless a partial
    share beats it by more than ``PARTIAL_PENALTY``."""
    full = rows[fractions[rows] >= 1.0]
    best_full = int(full[int(np.argmax(combined[full]))]) if len(full) else int(rows[0])
    best_any = int(rows[int(np.argmax(combined[rows]))])
    return best_any if combined[best_any] > combined[best_full] + PARTIAL_PENALTY else best_full


def _refine_severity(severities: np.ndarray, values: np.ndarray) -> float:
    """The grid maximiser, moved to the vertex of the parabola through it and its neighbours."""
    index = int(np.argmax(values))
    if 0 < index < len(values) - 1:
        left, centre, right = values[index - 1], values[index], values[index + 1]
        step_left = severities[index] - severities[index - 1]
        step_right = severities[index + 1] - severities[index]
        curvature = left - 2 * centre + right
        if abs(step_left - step_right) < 1e-9 and curvature < 0:
            offset = 0.5 * (left - right) / curvature * step_left
            return float(np.clip(severities[index] + offset, severities[index - 1], severities[index + 1]))
    return float(severities[index])


def _source(kind: str, family: str, severity: float, embedded: Embeddings) -> Source:
    return Source(kind=kind, family=family, severity=float(severity), raw=_raw(embedded).astype(np.float32),
                  preds=np.asarray(embedded.preds, dtype=np.int64),
                  probs=np.asarray(embedded.probs, dtype=np.float64),
                  features=np.asarray(embedded.features, dtype=np.float32))


def _raw(embedded: Embeddings) -> np.ndarray:
    return raw_statistics(embedded.features, embedded.logits, embedded.probs)


def _family(kind: str) -> str:
    try:
        return corruption_info(kind).family
    except ConfigError:
        return "other"


def _as_shares(values: np.ndarray, support: np.ndarray) -> dict[int, float]:
    return {int(index): float(values[index]) for index in np.flatnonzero(support)}


