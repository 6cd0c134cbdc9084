"""The "signature" diagnoser: known shifts' signatures in set statistics, a calibrated gate and rejection.

Fit (reference R with labels, bank = R under every corruption x severity):

1. Per-image raw statistics (features, entropy, max prob, log feature norm, logsumexp) and a Fisher
   discriminant projection to K coordinates (``statistics``); per hypothesis (clean, corruption c at
   severity s, interpolated between the bank's levels) the mean, covariance and class-wise means of the
   statistics and the confusion matrix (``signatures``).
2. Calibration by cross-fitting: the reference rows are split into two random halves; a model
   fitted on one fold scores random subsets of the other fold's images (clean, label-shifted with
   Dirichlet(1) class priors, and every bank set) at several sample sizes. From these held-out subsets:
   the label-shift threshold T_LS and covariate threshold T_cov (quantiles of the clean subsets'
   statistics at 1 - false_alarm / 2 each), the temperature τ of the cause posterior (least negative
   log-likelihood of the true cause) and the rejection threshold for "unknown shift" (the
   ``unknown_quantile`` quantile of the held-out known shifts' distance to the nearest signature).
   Thresholds are interpolated in log n between the calibrated sizes and held constant beyond them.
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
label shift also loses its T_cov / 2 head start (the best-fitting signature then names the drift). The
estimated severity of c is its maximising s (refined by a parabola through the grid
neighbours). When the winner is a corruption but the sample's distance to the nearest signature exceeds
the rejection threshold, the verdict is "unknown shift": the "unknown" cause's score is the share of
held-out known shifts that lie closer, and the other scores are multiplied by one minus it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from zeal_core.corruptions import corruption_info
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
from zeal_core.diagnose.signatures import CLEAN, GroupRows, SignatureTable, build_table
from zeal_core.diagnose.statistics import FoldMoments, Projection, raw_statistics
from zeal_core.drift.base import single_threaded_blas
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.shifts import ShiftedSet
from zeal_core.validate import check_int

# Samples scored together in one calibration batch (bounds the memory of the batched BBSE solves).
CALIBRATION_BATCH = 24
# Temperatures tried when calibrating the cause posterior (log-spaced).
TEMPERATURES = np.exp(np.linspace(np.log(1e-3), np.log(3.0), 61))
# Share of the cause posterior spread evenly over the causes (ε): a few held-out subsets that the
# signatures explain badly must not drive the temperature to zero, and no score claims certainty.
POSTERIOR_FLOOR = 0.02


@dataclass(frozen=True)
class SignatureConfig:
    """Settings of the signature diagnoser (``create_diagnoser("signature", **options)``)."""

    components: int = 32  # K, discriminant coordinates per image (at most the number of bank sets)
    spread_components: int = 8  # k <= K, coordinates whose squared deviation from clean is also used
    shrinkage: float = 0.9  # in [0, 1], pull of the within-group covariance towards its diagonal
    severity_step: float = 0.25  # severity grid step; the bank's own levels are always on the grid
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # shares of corrupted images covered (1 always)
    false_alarm: float = 0.04  # share of clean samples the own gate may call drifted (half per statistic)
    unknown_quantile: float = 0.99  # known shifts beyond this quantile of distance are called "unknown"
    bbse_ridge: float = 1.0  # BBSE ridge towards the reference prior: λ = bbse_ridge / n
    calibration_sizes: tuple[int, ...] = (25, 50, 100, 200)  # held-out subset sizes (up to half a fold)
    calibration_splits: int = 3  # random halvings of the reference; each gives two fold models
    clean_trials: int = 50  # clean held-out subsets per size and fold model (sets the gate's thresholds)
    label_shift_trials: int = 15  # label-shifted clean subsets per size and fold model (temperature)
    shift_trials: int = 1  # subsets per bank set, size and fold model (temperature, rejection threshold)

    def __post_init__(self) -> None:
        check_int(self.components, "components", 1, 512)
        check_int(self.spread_components, "spread_components", 0, int(self.components))
        for name, low, high in (("shrinkage", 0.0, 1.0), ("false_alarm", 1e-4, 0.5),
                                ("unknown_quantile", 0.5, 1.0), ("severity_step", 0.01, 5.0)):
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


@dataclass(frozen=True)
class Calibration:
    """What the held-out subsets gave: the gate's thresholds and the rejection distances (pooled over
    sizes, since the statistics are log-likelihood ratios whose null distribution hardly depends on n),
    and one temperature per size (how much to trust the likelihoods does depend on n)."""

    label_shift_threshold: float  # T_LS
    covariate_threshold: float  # T_cov
    distances: np.ndarray  # sorted distances of held-out known shifts to their nearest signature
    sizes: tuple[int, ...]  # calibrated sample sizes
    temperatures: tuple[float, ...]  # τ per size
    held_out: tuple[dict[str, float], ...]  # per size: accuracy on the held-out subsets


@register_diagnoser
class SignatureDiagnoser(Diagnoser):
    """Signatures of the bank's shifts in set statistics; BBSE for label shift; calibrated gate/rejection."""

    name = "signature"
    description = ("names the corruption (with severity), a label shift or no drift from set statistics of "
                   "features and confidences, calibrated on held-out bank subsets")

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
        self._families: dict[str, str] = {}
        self.fit_report: dict[str, Any] = {}

    # Fitting ----------------------------------------------------------------------------------------------

    def _fit(self, reference: Embeddings, bank: tuple[ShiftedSet, ...], seed: int) -> None:
        config = self.config
        rng = np.random.default_rng(seed)
        labels = np.asarray(reference.labels, dtype=np.int64)
        classes = reference.probs.shape[1]
        sources = [(CLEAN, 0.0, reference)] + [(shifted.corruption, shifted.severity, shifted.embeddings)
                                               for shifted in bank]
        self._families = {kind: _family(kind) for kind, _, _ in sources[1:]}
        corruptions = list(dict.fromkeys(kind for kind, _, _ in sources[1:]))
        components = min(config.components, len(sources) - 1)
        spread = min(config.spread_components, components)
        preds = [np.asarray(embedded.preds, dtype=np.int64) for _, _, embedded in sources]
        probs = [np.asarray(embedded.probs, dtype=np.float64) for _, _, embedded in sources]
        with single_threaded_blas():
            raws = [_raw(embedded).astype(np.float32) for _, _, embedded in sources]

            def table_for(projection: Projection, rows: np.ndarray) -> SignatureTable:
                groups = [GroupRows(kind, severity, projection(raws[index][rows]), preds[index][rows],
                                    probs[index][rows], labels[rows])
                          for index, (kind, severity, _) in enumerate(sources)]
                return build_table(groups, spread, config.severity_step, classes, config.fractions)

            parts, full_projection = [], None
            for _ in range(config.calibration_splits):
                fold = _random_folds(len(labels), rng)
                moments = FoldMoments(2)
                for raw in raws:
                    moments.add(raw.astype(np.float64), fold)
                if full_projection is None:
                    full_projection = moments.projection([0, 1], components, config.shrinkage)
                for model in (0, 1):
                    projection = moments.projection([model], components, config.shrinkage)
                    own, held = np.flatnonzero(fold == model), np.flatnonzero(fold != model)
                    table = table_for(projection, own)
                    held_groups = [(kind, table.expand(projection(raws[index][held])), preds[index][held],
                                    probs[index][held]) for index, (kind, _, _) in enumerate(sources)]
                    parts.append(self._score_held_out(table, held_groups, labels[held], rng))
            self._calibration = self._calibrate(parts, corruptions)
            self._projection = full_projection
            self._table = table_for(full_projection, np.arange(len(labels)))
        calibration = self._calibration
        self.fit_report = {
            "reference_images": len(labels), "bank_sets": len(bank), "components": components,
            "hypotheses": len(self._table.kinds), "corruptions": corruptions,
            "label_shift_threshold": calibration.label_shift_threshold,
            "covariate_threshold": calibration.covariate_threshold,
            "distance_threshold": _quantile(calibration.distances, config.unknown_quantile),
            "calibration": [{"n": size, "temperature": tau, **held_out} for size, tau, held_out
                            in zip(calibration.sizes, calibration.temperatures, calibration.held_out,
                                   strict=True)],
            "config": asdict(config)}

    def _score_held_out(self, table: SignatureTable,
                        groups: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                        held_labels: np.ndarray, rng: np.random.Generator) -> dict[int, dict[str, Any]]:
        """Evaluate random held-out subsets of every size: the raw material of the calibration."""
        config = self.config
        pool = len(held_labels)
        # at most half the pool, so that subsets of one pool differ (a subset of nearly the whole pool
        # repeats one draw, and the gate's tail quantiles would rest on a handful of draws)
        sizes = [size for size in config.calibration_sizes if size <= pool // 2] or [max(2, pool // 2)]
        classes = table.prior.shape[0]
        support = np.flatnonzero(table.prior > 0)
        _, clean_u, clean_preds, clean_probs = groups[0]
        by_class = {j: np.flatnonzero(held_labels == j) for j in support}
        by_class = {j: rows for j, rows in by_class.items() if len(rows)}
        results: dict[int, dict[str, Any]] = {}
        for size in sizes:
            samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            truths: list[str] = []
            for _ in range(config.clean_trials):
                rows = rng.choice(pool, size, replace=False)
                samples.append((clean_u[rows], clean_preds[rows], clean_probs[rows]))
                truths.append(NO_DRIFT)
            for _ in range(config.label_shift_trials):
                rows = _label_shifted_rows(by_class, size, rng)
                samples.append((clean_u[rows], clean_preds[rows], clean_probs[rows]))
                truths.append(LABEL_SHIFT)
            for kind, expanded, group_preds, group_probs in groups[1:]:
                for _ in range(config.shift_trials):
                    rows = rng.choice(pool, size, replace=False)
                    samples.append((expanded[rows], group_preds[rows], group_probs[rows]))
                    truths.append(kind)
            means = np.stack([u.mean(0) for u, _, _ in samples])
            counts = np.stack([np.bincount(p, minlength=classes)[:classes] for _, p, _ in samples])
            counts = counts.astype(np.float64)
            mean_probs = np.stack([p.mean(0) for _, _, p in samples])
            chunks = range(0, len(samples), CALIBRATION_BATCH)
            summaries = [self._summarise(table, table.evaluate(
                means[start:start + CALIBRATION_BATCH], counts[start:start + CALIBRATION_BATCH],
                mean_probs[start:start + CALIBRATION_BATCH], size, config.bbse_ridge)) for start in chunks]
            merged = {key: np.concatenate([part[key] for part in summaries]) for key in summaries[0]}
            results[size] = {"truths": np.asarray(truths), **merged}
        return results

    @staticmethod
    def _summarise(table: SignatureTable, evaluation: Any) -> dict[str, np.ndarray]:
        """Per sample: the clean log-likelihoods, each corruption's best (at both priors) and distances."""
        corruptions = table.corruptions
        kinds = np.asarray(table.kinds)
        best_reference = np.stack([evaluation.at_reference_prior[:, kinds == name].max(1)
                                   for name in corruptions], 1)
        best_estimated = np.stack([evaluation.at_estimated_prior[:, kinds == name].max(1)
                                   for name in corruptions], 1)
        distance = np.minimum(evaluation.distance_reference, evaluation.distance_estimated).min(1)
        return {"clean_reference": evaluation.at_reference_prior[:, 0],
                "clean_estimated": evaluation.at_estimated_prior[:, 0],
                "best_reference": best_reference, "best_estimated": best_estimated, "distance": distance}

    def _calibrate(self, parts: list[dict[int, dict[str, Any]]], corruptions: list[str]) -> Calibration:
        config = self.config
        sizes = sorted(set.intersection(*(set(part) for part in parts)))
        by_size = {size: {key: np.concatenate([part[size][key] for part in parts]) for key in parts[0][size]}
                   for size in sizes}
        pooled = {key: np.concatenate([by_size[size][key] for size in sizes]) for key in by_size[sizes[0]]}
        clean = pooled["truths"] == NO_DRIFT
        label_statistic = 2.0 * (pooled["clean_estimated"] - pooled["clean_reference"])
        label_threshold = _quantile(label_statistic[clean], 1.0 - config.false_alarm / 2)
        scores = _cause_scores(pooled, label_threshold, 0.0)
        base = np.maximum(pooled["clean_reference"], pooled["clean_estimated"] - label_threshold / 2)
        covariate_threshold = _quantile(2.0 * (scores[clean, 2:].max(1) - base[clean]),
                                        1.0 - config.false_alarm / 2)
        causes = [NO_DRIFT, LABEL_SHIFT, *corruptions]
        temperatures, held_out = [], []
        for size in sizes:
            data = by_size[size]
            truths = data["truths"]
            scores = _cause_scores(data, label_threshold, covariate_threshold)
            truth_index = np.asarray([causes.index(truth) for truth in truths])
            temperatures.append(_fit_temperature(scores, truth_index))
            winner = scores.argmax(1)
            is_clean, shifted = truths == NO_DRIFT, truth_index >= 2
            held_out.append({
                "clean_no_drift": float((winner[is_clean] == 0).mean()),
                "label_shift_named": float((winner[truths == LABEL_SHIFT] == 1).mean()),
                "corruption_top1": float((winner[shifted] == truth_index[shifted]).mean()),
                "trials_clean": int(is_clean.sum()), "trials_shift": int(shifted.sum())})
        return Calibration(label_shift_threshold=label_threshold, covariate_threshold=covariate_threshold,
                           distances=np.sort(pooled["distance"]), sizes=tuple(sizes),
                           temperatures=tuple(temperatures), held_out=tuple(held_out))

    # Diagnosing -------------------------------------------------------------------------------------------

    def _diagnose(self, sample: Embeddings, drift_detected: bool | None) -> Diagnosis:
        table, projection, config = self._table, self._projection, self.config
        assert table is not None and projection is not None
        n = len(sample)
        classes = table.prior.shape[0]
        with single_threaded_blas():
            expanded = table.expand(projection(_raw(sample)))
            counts = np.bincount(np.asarray(sample.preds, np.int64), minlength=classes)[:classes]
            mean_probs = np.asarray(sample.probs, dtype=np.float64).mean(0)
            evaluation = table.evaluate(expanded.mean(0)[None], counts[None].astype(np.float64),
                                        mean_probs[None], n, config.bbse_ridge)
        calibration = self._at_size(n)
        label_threshold, covariate_threshold, temperature, distances = calibration
        summary = {key: value[0] for key, value in self._summarise(table, evaluation).items()}
        scores = _cause_scores({key: value[None] for key, value in summary.items()}, label_threshold,
                               covariate_threshold)[0]
        causes = [NO_DRIFT, LABEL_SHIFT, *table.corruptions]
        allowed = np.ones(len(causes), dtype=bool)
        if drift_detected is True:
            allowed[0] = False
            label_statistic = 2 * (summary["clean_estimated"] - summary["clean_reference"])
            if label_statistic <= label_threshold:
                # Drift is asserted but the class mix did not change significantly: label shift loses the
                # head start it has over no drift, and the best-fitting shift signature names the drift.
                scores = scores.copy()
                scores[1] -= covariate_threshold / 2
        posterior = _posterior(scores, temperature, allowed)
        winner = int(np.argmax(np.where(allowed, scores, -np.inf)))
        penalty = label_threshold / 2
        combined = np.maximum(evaluation.at_reference_prior[0], evaluation.at_estimated_prior[0] - penalty)
        uses_prior = evaluation.at_estimated_prior[0] - penalty > evaluation.at_reference_prior[0]
        kinds = np.asarray(table.kinds)
        distance = float(summary["distance"])
        rejection = float(np.searchsorted(distances, distance, side="left") / max(len(distances), 1))
        statistics = {
            "label_shift_statistic": float(2 * (summary["clean_estimated"] - summary["clean_reference"])),
            "label_shift_threshold": label_threshold,
            "covariate_statistic": float(2 * (scores[2:].max() - max(summary["clean_reference"],
                                                                     summary["clean_estimated"] - penalty))),
            "covariate_threshold": covariate_threshold,
            "distance": distance, "distance_threshold": _quantile(distances, config.unknown_quantile),
            "temperature": temperature,
        }
        cause_list = []
        for index, kind in enumerate(causes):
            if not allowed[index]:
                continue
            cause_list.append(self._cause(kind, float(posterior[index]), table, combined, uses_prior, kinds,
                                          evaluation, statistics))
        cause_list.sort(key=lambda cause: -cause.score)
        verdict = {0: "no drift", 1: "label shift"}.get(winner, "covariate shift")
        if drift_detected is False:
            verdict = "no drift"
            cause_list.sort(key=lambda cause: cause.kind != NO_DRIFT)
        elif winner >= 2 and rejection >= config.unknown_quantile:
            verdict = "unknown shift"
            unknown = Cause(UNKNOWN, FAMILY_OF[UNKNOWN], rejection, None,
                            {"distance": distance, "distance_threshold": statistics["distance_threshold"]})
            cause_list = [unknown] + [replace(cause, score=cause.score * (1 - rejection))
                                      for cause in cause_list]
        best_hypothesis = self._best_hypothesis(causes[winner], combined, kinds)
        proportions = evaluation.priors[0, best_hypothesis]
        details: dict[str, Any] = {"statistics": statistics, "method": "signature"}
        if verdict in ("covariate shift", "unknown shift"):
            details["image_scores"] = table.image_scores(expanded, best_hypothesis)
        return Diagnosis(causes=tuple(cause_list), verdict=verdict,
                         estimated_class_proportions=_as_shares(proportions, table.prior > 0),
                         reference_class_proportions=_as_shares(table.prior, table.prior > 0),
                         details=details)

    def _cause(self, kind: str, score: float, table: SignatureTable, combined: np.ndarray,
               uses_prior: np.ndarray, kinds: np.ndarray, evaluation: Any, statistics: dict) -> Cause:
        if kind == NO_DRIFT:
            return Cause(kind, FAMILY_OF[kind], score, None,
                         {"covariate_statistic": statistics["covariate_statistic"],
                          "covariate_threshold": statistics["covariate_threshold"]})
        if kind == LABEL_SHIFT:
            return Cause(kind, FAMILY_OF[kind], score, None,
                         {"statistic": statistics["label_shift_statistic"],
                          "threshold": statistics["label_shift_threshold"]})
        rows = np.flatnonzero(kinds == kind)
        best = rows[int(np.argmax(combined[rows]))]
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

    def _at_size(self, n: int) -> tuple[float, float, float, np.ndarray]:
        """Thresholds, the temperature (interpolated in log n, constant beyond the calibrated sizes) and the
        held-out distances, at sample size n."""
        calibration = self._calibration
        assert calibration is not None
        temperature = float(np.exp(np.interp(np.log(n), np.log(calibration.sizes),
                                             np.log(calibration.temperatures))))
        return (calibration.label_shift_threshold, calibration.covariate_threshold, temperature,
                calibration.distances)


def _cause_scores(data: dict[str, np.ndarray], label_threshold: float,
                  covariate_threshold: float) -> np.ndarray:
    """B x (2 + corruptions): a_no_drift, a_label_shift, a_c (module docstring)."""
    penalty = label_threshold / 2
    no_drift = data["clean_reference"] + covariate_threshold / 2
    label_shift = data["clean_estimated"] - penalty + covariate_threshold / 2
    corruptions = np.maximum(data["best_reference"], data["best_estimated"] - penalty)
    return np.concatenate([no_drift[:, None], label_shift[:, None], corruptions], axis=1)


def _posterior(scores: np.ndarray, temperature: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """(1 - ε) softmax(τ a) + ε / K over the allowed causes (last axis): never more certain than 1 - ε."""
    allowed = np.ones(scores.shape[-1], dtype=bool) if allowed is None else allowed
    logits = np.where(allowed, temperature * scores, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    softmax = weights / weights.sum(-1, keepdims=True)
    return (1 - POSTERIOR_FLOOR) * softmax + POSTERIOR_FLOOR * allowed / allowed.sum()


def _fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """τ minimising the mean negative log-likelihood of the true cause under ``_posterior``."""
    losses = [-np.log(_posterior(scores, temperature)[np.arange(len(truth)), truth]).mean()
              for temperature in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


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


def _raw(embedded: Embeddings) -> np.ndarray:
    return raw_statistics(embedded.features, embedded.logits, embedded.probs)


def _random_folds(count: int, rng: np.random.Generator) -> np.ndarray:
    """0/1 fold per row: a seeded random half each. Not stratified by class: a new sample's class mix
    differs from the reference's by chance, and the held-out fold must show the gate that variation."""
    fold = np.zeros(count, dtype=np.int64)
    fold[rng.permutation(count)[count // 2:]] = 1
    return fold


def _label_shifted_rows(by_class: dict[int, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of a sample whose class prior is drawn from Dirichlet(1) (with replacement where a class runs
    out)."""
    classes = list(by_class)
    counts = rng.multinomial(size, rng.dirichlet(np.ones(len(classes))))
    parts = [rng.choice(by_class[label], count, replace=count > len(by_class[label]))
             for label, count in zip(classes, counts, strict=True) if count]
    return np.concatenate(parts)


def _quantile(values: np.ndarray, level: float) -> float:
    return float(np.quantile(values, level)) if len(values) else float("inf")


def _family(kind: str) -> str:
    try:
        return corruption_info(kind).family
    except ConfigError:
        return "other"


def _as_shares(values: np.ndarray, support: np.ndarray) -> dict[int, float]:
    return {int(index): float(values[index]) for index in np.flatnonzero(support)}
