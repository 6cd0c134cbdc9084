"""Cross-fitted calibration of the signature diagnoser: held-out subsets, cause scores, thresholds.

The reference rows are split into random halves; signatures fitted on one half score random subsets of
the other half's images. What those held-out subsets give:

- clean subsets: the null distributions of the gate's statistics D_LS and D_cov (their thresholds) and of
  the label-shift assumption check (``assumption``);
- clean subsets with Dirichlet(1) class priors: label-shift examples (the cause posterior's temperature,
  and the assumption check's null: a real label shift must pass it);
- subsets of every bank set: known shifts (the temperature, and the "named" side of the unknown rule);
- subsets of the bank sets of a family the signatures were fitted *without* (leave one family out): shifts
  the diagnoser has never seen, the "unknown" side of the unknown rule (``rejection``).

Cause scores (module docstring of ``signature``): with T_LS, T_cov and the label-shift penalty p = T_LS / 2,

    a_no_drift    = ℓ_clean(π_ref) + T_cov / 2
    a_label_shift = ℓ_clean(π̂) - p + T_cov / 2
    a_c           = max over s (and f) of max(ℓ_(c,s)(π_ref), ℓ_(c,s)(π̂) - p)

and the posterior over the causes is (1 - ε) softmax(τ a) + ε / K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zeal_core.diagnose.base import LABEL_SHIFT, NO_DRIFT, UNKNOWN
from zeal_core.diagnose.signature_table import SignatureTable

# Samples scored together in one calibration batch (bounds the memory of the batched BBSE solves).
CALIBRATION_BATCH = 24
# Temperatures tried when calibrating the cause posterior (log-spaced).
TEMPERATURES = np.exp(np.linspace(np.log(1e-3), np.log(3.0), 61))
# Share of the cause posterior spread evenly over the causes (ε): a few held-out subsets that the
# signatures explain badly must not drive the temperature to zero, and no score claims certainty.
POSTERIOR_FLOOR = 0.02


@dataclass(frozen=True)
class HeldOutGroup:
    """One group of held-out reference rows (clean, or a bank set) as a fold's signatures see them."""

    kind: str  # "clean" or the corruption name
    expanded: np.ndarray  # rows x U statistics u (``SignatureTable.expand``)
    preds: np.ndarray  # rows: predicted classes
    probs: np.ndarray  # rows x C: softmax outputs
    items: np.ndarray  # rows: the assumption check's per-item scores a_i (``assumption``)


@dataclass(frozen=True)
class SubsetPlan:
    """Which held-out subsets to draw at one size (counts per group)."""

    clean: int  # clean subsets
    label_shift: int  # clean subsets with a Dirichlet(1) class prior
    per_shift: int  # subsets of every shifted group
    shift_truth: str | None = None  # the truth recorded for shifted subsets (None: the group's kind)


def draw_rows(groups: list[HeldOutGroup], labels: np.ndarray, size: int, plan: SubsetPlan,
              rng: np.random.Generator) -> tuple[list[tuple[int, np.ndarray]], list[str]]:
    """(group index, rows) of every subset the plan asks for, and each one's true cause."""
    pool = len(labels)
    support = np.unique(labels)
    by_class = {int(j): np.flatnonzero(labels == j) for j in support}
    draws, truths = [], []
    for _ in range(plan.clean):
        draws.append((0, rng.choice(pool, size, replace=False)))
        truths.append(NO_DRIFT)
    for _ in range(plan.label_shift):
        draws.append((0, label_shifted_rows(by_class, size, rng)))
        truths.append(LABEL_SHIFT)
    for index, group in enumerate(groups[1:], start=1):
        for _ in range(plan.per_shift):
            draws.append((index, rng.choice(pool, size, replace=False)))
            truths.append(plan.shift_truth or group.kind)
    return draws, truths


def score_subsets(table: SignatureTable, groups: list[HeldOutGroup], draws: list[tuple[int, np.ndarray]],
                  truths: list[str], size: int, ridge: float) -> dict[str, np.ndarray]:
    """Evaluate held-out subsets under ``table``: the summary of each (``summarise``), its truth and the
    mean of its assumption-check item scores."""
    classes = table.prior.shape[0]
    means = np.stack([groups[g].expanded[rows].mean(0) for g, rows in draws])
    counts = np.stack([np.bincount(groups[g].preds[rows], minlength=classes)[:classes] for g, rows in draws])
    mean_probs = np.stack([groups[g].probs[rows].mean(0) for g, rows in draws])
    item_means = np.asarray([groups[g].items[rows].mean() for g, rows in draws])
    parts = []
    for start in range(0, len(draws), CALIBRATION_BATCH):
        stop = start + CALIBRATION_BATCH
        parts.append(summarise(table, table.evaluate(means[start:stop], counts[start:stop].astype(np.float64),
                                                     mean_probs[start:stop], size, ridge)))
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return {"truths": np.asarray(truths), "item_means": item_means, "pred_shares": counts / size, **merged}


def summarise(table: SignatureTable, evaluation: Any) -> dict[str, np.ndarray]:
    """Per sample: the clean log-likelihoods, each corruption's best (at both priors) and distances."""
    kinds = np.asarray(table.kinds)
    masks = [kinds == name for name in table.corruptions]
    best_reference = np.stack([evaluation.at_reference_prior[:, mask].max(1) for mask in masks], 1)
    best_estimated = np.stack([evaluation.at_estimated_prior[:, mask].max(1) for mask in masks], 1)
    nearest = np.minimum(evaluation.distance_reference, evaluation.distance_estimated)
    return {"clean_reference": evaluation.at_reference_prior[:, 0],
            "clean_estimated": evaluation.at_estimated_prior[:, 0],
            "best_reference": best_reference, "best_estimated": best_estimated,
            "distance": nearest.min(1), "clean_distance": nearest[:, 0],
            "corruption_distance": np.stack([nearest[:, mask].min(1) for mask in masks], 1)}


def cause_scores(data: dict[str, np.ndarray], label_threshold: float,
                 covariate_threshold: float) -> np.ndarray:
    """B x (2 + corruptions): a_no_drift, a_label_shift, a_c (module docstring)."""
    penalty = label_threshold / 2
    no_drift = data["clean_reference"] + covariate_threshold / 2
    label_shift = data["clean_estimated"] - penalty + covariate_threshold / 2
    corruptions = np.maximum(data["best_reference"], data["best_estimated"] - penalty)
    return np.concatenate([no_drift[:, None], label_shift[:, None], corruptions], axis=1)


def posterior(scores: np.ndarray, temperature: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """(1 - ε) softmax(τ a) + ε / K over the allowed causes (last axis): never more certain than 1 - ε."""
    allowed = np.ones(scores.shape[-1], dtype=bool) if allowed is None else allowed
    logits = np.where(allowed, temperature * scores, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    softmax = weights / weights.sum(-1, keepdims=True)
    return (1 - POSTERIOR_FLOOR) * softmax + POSTERIOR_FLOOR * allowed / allowed.sum(-1, keepdims=True)


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """τ minimising the mean negative log-likelihood of the true cause under ``posterior``."""
    losses = [-np.log(posterior(scores, temperature)[np.arange(len(truth)), truth]).mean()
              for temperature in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def gate_thresholds(pooled: dict[str, np.ndarray], false_alarm: float) -> tuple[float, float]:
    """T_LS and T_cov: the (1 - false_alarm / 2) quantiles of the clean subsets' D_LS and D_cov."""
    clean = pooled["truths"] == NO_DRIFT
    label_statistic = 2.0 * (pooled["clean_estimated"] - pooled["clean_reference"])
    label_threshold = quantile(label_statistic[clean], 1.0 - false_alarm / 2)
    scores = cause_scores(pooled, label_threshold, 0.0)
    base = np.maximum(pooled["clean_reference"], pooled["clean_estimated"] - label_threshold / 2)
    covariate_threshold = quantile(2.0 * (scores[clean, 2:].max(1) - base[clean]), 1.0 - false_alarm / 2)
    return label_threshold, covariate_threshold


def temperatures_by_size(by_size: dict[int, dict[str, np.ndarray]], corruptions: list[str],
                         label_threshold: float, covariate_threshold: float
                         ) -> tuple[list[float], list[dict[str, Any]]]:
    """τ per size (fitted on the known causes' held-out subsets) and how the winner did at each size."""
    causes = [NO_DRIFT, LABEL_SHIFT, *corruptions]
    temperatures, held_out = [], []
    for data in by_size.values():
        known = data["truths"] != UNKNOWN
        truths = data["truths"][known]
        scores = cause_scores({key: value[known] for key, value in data.items()}, label_threshold,
                              covariate_threshold)
        truth_index = np.asarray([causes.index(truth) for truth in truths])
        temperatures.append(fit_temperature(scores, truth_index))
        winner = scores.argmax(1)
        is_clean, shifted = truths == NO_DRIFT, truth_index >= 2
        held_out.append({
            "clean_no_drift": float((winner[is_clean] == 0).mean()),
            "label_shift_named": float((winner[truths == LABEL_SHIFT] == 1).mean()),
            "corruption_top1": float((winner[shifted] == truth_index[shifted]).mean()),
            "trials_clean": int(is_clean.sum()), "trials_shift": int(shifted.sum())})
    return temperatures, held_out


def pool_parts(parts: list[dict[int, dict[str, np.ndarray]]]) -> dict[int, dict[str, np.ndarray]]:
    """Size -> every fold's held-out results concatenated (sizes all folds share)."""
    sizes = sorted(set.intersection(*(set(part) for part in parts)))
    return {size: {key: np.concatenate([part[size][key] for part in parts]) for key in parts[0][size]}
            for size in sizes}


def label_shifted_rows(by_class: dict[int, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of a sample whose class prior is drawn from Dirichlet(1) (with replacement where a class runs
    out)."""
    classes = list(by_class)
    counts = rng.multinomial(size, rng.dirichlet(np.ones(len(classes))))
    parts = [rng.choice(by_class[label], count, replace=count > len(by_class[label]))
             for label, count in zip(classes, counts, strict=True) if count]
    return np.concatenate(parts)


def random_folds(count: int, rng: np.random.Generator) -> np.ndarray:
    """0/1 fold per row: a seeded random half each. Not stratified by class: a new sample's class mix
    differs from the reference's by chance, and the held-out fold must show the gate that variation."""
    fold = np.zeros(count, dtype=np.int64)
    fold[rng.permutation(count)[count // 2:]] = 1
    return fold


def quantile(values: np.ndarray, level: float) -> float:
    """The ``level`` quantile of ``values`` (inf when there are none)."""
    return float(np.quantile(values, level)) if len(values) else float("inf")
