"""``bench diagnose`` scoring: known kinds, clean, label shift, partial drifts, held-out and unseen kinds.

Every sample is a random subset of the sample pool (images no fit saw) under one shift. Held-out design:
``score_held_out_families`` refits the diagnoser without a whole bank family and diagnoses that family's
shifts (only "unknown shift" is right); ``score_unseen`` diagnoses, with the full diagnoser, kinds never in a
bank: the registered geometry and capture kinds, the external shifts of an independent PIL/numpy
implementation and compounds (right: "unknown shift", or a family the shift belongs to). Both record how
often a prediction-collapse shift is called a label shift.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks._harness import median_seconds
from benchmarks._labelfree_views import (
    LabelFreeViews,
    right_families,
    shift_family,
    shift_kind,
    shift_severity,
)
from zeal_core.progress import ProgressCallback, report

TARGET_SIZE = 100  # the known-kind targets are at n = 100, severity >= 3
TARGET_MIN_SEVERITY = 3.0
# A shift "collapses predictions" when its most predicted class takes at least this share of the pool's
# predictions and at least twice that class's share on the clean pool.
COLLAPSE_SHARE = 0.3


def draw_label_shifted(pool_labels: np.ndarray, n: int, prior: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Positions of a sample of n pool images whose class counts are Multinomial(n, prior).

    Within a class images are drawn without replacement while the class has enough, else with replacement
    (a repeated image is an exact duplicate). Stand-in until the label-shift drift kind
    (``DriftSpec.draw_positions``) is on main; it will then be replaced by it.
    """
    counts = rng.multinomial(n, prior)
    parts = []
    for label, count in enumerate(counts):
        members = np.flatnonzero(pool_labels == label)
        if count and len(members):
            parts.append(rng.choice(members, count, replace=count > len(members)))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _rate(hits: int, trials: int) -> dict[str, float]:
    share = hits / trials if trials else float("nan")
    return {"rate": share, "se": float(np.sqrt(share * (1 - share) / trials)) if trials else float("nan"),
            "trials": trials}


def _mean(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray([value for value in values if value is not None and np.isfinite(value)], float)
    if not len(array):
        return {"mean": float("nan"), "se": float("nan"), "trials": 0}
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else float("nan")
    return {"mean": float(array.mean()), "se": se, "trials": len(array)}


def score_corruptions(diagnoser: Any, views: LabelFreeViews, kinds: Sequence[str],
                      severities: Sequence[float], sizes: Sequence[int], trials: int,
                      rng: np.random.Generator, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Top-1/top-3/family/severity/detection per (n, severity) and confusion counts per n."""
    from zeal_core.corruptions import DriftSpec, corruption_info

    cells: dict[str, dict[str, Any]] = {}
    confusion: dict[str, dict[str, dict[str, int]]] = {}
    pool_size = len(views.pool)
    for step, n in enumerate(sizes):
        confusion[str(n)] = {}
        for severity in severities:
            counts = Counter()
            severity_errors, top_errors, per_kind = [], [], {}
            for kind in kinds:
                text = DriftSpec(steps=((kind, float(severity)),)).text
                embedded = views.shifted[text]
                family = corruption_info(kind).family
                kind_hits = 0
                for _ in range(trials):
                    rows = np.sort(rng.choice(pool_size, n, replace=False))
                    sample = embedded.subset(rows)
                    forced = diagnoser.diagnose(sample, drift_detected=True)
                    own = diagnoser.diagnose(sample)
                    ranked = [cause.kind for cause in forced.causes if cause.kind != "unknown"]
                    top = forced.causes[0]
                    counts["top1"] += top.kind == kind
                    kind_hits += top.kind == kind
                    counts["top3"] += kind in [cause.kind for cause in forced.causes[:3]]
                    counts["top3_known"] += kind in ranked[:3]
                    counts["family"] += top.family == family
                    counts["unknown"] += forced.verdict == "unknown shift"
                    counts["detected"] += own.verdict != "no drift"
                    counts["trials"] += 1
                    true_cause = forced.cause(kind)
                    if true_cause is not None and true_cause.severity is not None:
                        severity_errors.append(abs(true_cause.severity - severity))
                        if top.kind == kind:
                            top_errors.append(abs(true_cause.severity - severity))
                    row = confusion[str(n)].setdefault(f"{kind}:{severity:g}", {})
                    row[top.kind] = row.get(top.kind, 0) + 1
                per_kind[kind] = kind_hits / trials
            total = counts["trials"]
            cells[f"{n}|{severity:g}"] = {
                "n": n, "severity": severity,
                "top1": _rate(counts["top1"], total), "top3": _rate(counts["top3"], total),
                "top3_known": _rate(counts["top3_known"], total),
                "family_top1": _rate(counts["family"], total), "unknown": _rate(counts["unknown"], total),
                "detected_own_gate": _rate(counts["detected"], total),
                "severity_mae": _mean(severity_errors), "severity_mae_when_top1": _mean(top_errors),
                "top1_by_kind": per_kind}
        report(progress, "diagnose-grid", step + 1, len(sizes), f"n = {n} scored")
    return {"cells": cells, "confusion": confusion}


def mix_rows(clean: Any, shifted: Any, rows: np.ndarray, affected: np.ndarray) -> Any:
    """The pool images at ``rows``, shifted where ``affected`` and clean elsewhere (what ``spec@f`` gives)."""
    from zeal_core.embed import Embeddings

    def pick(name: str) -> np.ndarray:
        chosen, other = getattr(shifted, name)[rows], getattr(clean, name)[rows]
        mask = affected.reshape(-1, *([1] * (chosen.ndim - 1)))
        return np.where(mask, chosen, other)

    return Embeddings(features=pick("features"), probs=pick("probs"), preds=pick("preds"),
                      labels=pick("labels"), indices=np.asarray(rows), logits=pick("logits"),
                      affected=np.asarray(affected, dtype=bool))


def score_fractions(diagnoser: Any, views: LabelFreeViews, kinds: Sequence[str], severities: Sequence[float],
                    fractions: Sequence[float], n: int, trials: int,
                    rng: np.random.Generator) -> dict[str, Any]:
    """Partial drifts (``kind:severity@fraction``): top-1, 'unknown', fraction error, per-image score AUC."""
    from zeal_core.corruptions import DriftSpec, corruption_info

    results = {}
    for fraction in fractions:
        counts, fraction_errors, aucs = Counter(), [], []
        for kind in kinds:
            for severity in severities:
                spec = DriftSpec(steps=((kind, float(severity)),), fraction=float(fraction))
                shifted = views.shifted[DriftSpec(steps=spec.steps).text]
                for _ in range(trials):
                    rows = np.sort(rng.choice(len(views.pool), n, replace=False))
                    affected = spec.affected_mask(n, seed=int(rng.integers(1 << 30))).numpy()
                    diagnosis = diagnoser.diagnose(mix_rows(views.pool, shifted, rows, affected),
                                                   drift_detected=True)
                    counts["top1"] += diagnosis.best.kind == kind
                    counts["family"] += diagnosis.best.family == corruption_info(kind).family
                    counts["unknown"] += diagnosis.verdict == "unknown shift"
                    counts["trials"] += 1
                    named = diagnosis.cause(kind)
                    if named is not None and "fraction" in named.details:
                        fraction_errors.append(abs(named.details["fraction"] - spec.affected_count(n) / n))
                    scores = diagnosis.details.get("image_scores")
                    if scores is not None and 0 < affected.sum() < n:
                        scores = np.asarray(scores)
                        aucs.append(float((scores[affected][:, None] > scores[~affected][None, :]).mean()))
        total = counts["trials"]
        results[f"{fraction:g}"] = {"n": n, "fraction": fraction, "severities": list(severities),
                                    "top1": _rate(counts["top1"], total),
                                    "family_top1": _rate(counts["family"], total),
                                    "unknown": _rate(counts["unknown"], total),
                                    "fraction_mae": _mean(fraction_errors), "image_score_auc": _mean(aucs)}
    return results


def score_clean(diagnoser: Any, pool: Any, sizes: Sequence[int], trials: int,
                rng: np.random.Generator) -> dict[str, Any]:
    """Share of clean sample subsets with the verdict "no drift" (own gate), per n."""
    results = {}
    for n in sizes:
        verdicts = Counter()
        for _ in range(trials):
            rows = np.sort(rng.choice(len(pool), n, replace=False))
            verdicts[diagnoser.diagnose(pool.subset(rows)).verdict] += 1
        results[str(n)] = {"no_drift": _rate(verdicts["no drift"], trials), "verdicts": dict(verdicts)}
    return results


def score_label_shift(diagnoser: Any, pool: Any, sizes: Sequence[int], trials: int, concentration: float,
                      rng: np.random.Generator) -> dict[str, Any]:
    """BBSE's L1 error and the verdicts on clean subsets with random Dirichlet class priors, per n."""
    labels = np.asarray(pool.labels)
    classes = pool.probs.shape[1]
    present = np.flatnonzero(np.bincount(labels, minlength=classes) > 0)
    results = {}
    for n in sizes:
        l1_actual, l1_prior, verdicts, named_forced, rejected = [], [], Counter(), 0, 0
        for _ in range(trials):
            prior = np.zeros(classes)
            prior[present] = rng.dirichlet(np.full(len(present), concentration))
            rows = draw_label_shifted(labels, n, prior, rng)
            sample = pool.subset(rows)
            own = diagnoser.diagnose(sample)
            forced = diagnoser.diagnose(sample, drift_detected=True)
            verdicts[own.verdict] += 1
            named_forced += forced.causes[0].kind == "label_shift"
            check = own.details.get("statistics", {}).get("label_shift_check", {})
            rejected += not check.get("holds", True)
            estimate = np.array([(own.estimated_class_proportions or {}).get(j, 0.0) for j in range(classes)])
            actual = np.bincount(labels[rows], minlength=classes) / len(rows)
            l1_actual.append(float(np.abs(estimate - actual).sum()))
            l1_prior.append(float(np.abs(estimate - prior).sum()))
        results[str(n)] = {"l1_vs_sample": _mean(l1_actual), "l1_vs_prior": _mean(l1_prior),
                           "label_shift_verdict": _rate(verdicts["label shift"], trials),
                           "label_shift_top1_forced": _rate(named_forced, trials),
                           "assumption_rejected": _rate(rejected, trials), "verdicts": dict(verdicts)}
    return results


def speed(diagnoser: Any, pool: Any, sizes: Sequence[int], rng: np.random.Generator,
          repeats: int = 15) -> dict[str, float]:
    """Median seconds of one ``diagnose`` call per n (rows drawn with replacement beyond the pool)."""
    timings = {}
    for n in sizes:
        rows = np.sort(rng.choice(len(pool), n, replace=n > len(pool)))
        sample = pool.subset(rows)
        timings[str(n)] = median_seconds(lambda sample=sample: diagnoser.diagnose(sample), repeats)
    return timings




# Shifts the diagnoser never saw -----------------------------------------------------------------------------


def collapse_shifts(views: LabelFreeViews) -> dict[str, float]:
    """Shift text -> share of the pool's predictions taken by its most predicted class, for the shifts that
    collapse predictions (that share >= ``COLLAPSE_SHARE`` and >= twice the class's clean share)."""
    classes = views.pool.probs.shape[1]
    clean = np.bincount(views.pool.preds, minlength=classes) / len(views.pool)
    out = {}
    for text, embedded in views.shifted.items():
        shares = np.bincount(embedded.preds, minlength=classes) / len(embedded)
        top = int(shares.argmax())
        if shares[top] >= COLLAPSE_SHARE and shares[top] >= 2 * clean[top]:
            out[text] = float(shares[top])
    return out


class _Tally:
    """Verdict counts of one cell of held-out diagnoses."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.named: Counter = Counter()

    def add(self, forced: Any, own: Any, right: tuple[str, ...], collapse: bool) -> None:
        unknown = forced.verdict == "unknown shift"
        self.counts["trials"] += 1
        self.counts["unknown"] += unknown
        self.counts["right_family"] += (not unknown) and forced.best.family in right
        self.counts["detected"] += own.verdict != "no drift"
        self.counts["label_shift"] += forced.verdict == "label shift" or own.verdict == "label shift"
        self.counts["collapse_trials"] += collapse
        self.counts["collapse_label_shift"] += collapse and (forced.verdict == "label shift"
                                                             or own.verdict == "label shift")
        if not unknown:
            self.named[forced.best.kind] += 1

    def summary(self) -> dict[str, Any]:
        total = self.counts["trials"]
        return {"unknown": _rate(self.counts["unknown"], total),
                "right_family": _rate(self.counts["right_family"], total),
                "unknown_or_right": _rate(self.counts["unknown"] + self.counts["right_family"], total),
                "detected_own_gate": _rate(self.counts["detected"], total),
                "label_shift": _rate(self.counts["label_shift"], total),
                "collapse_label_shift": _rate(self.counts["collapse_label_shift"],
                                              self.counts["collapse_trials"]),
                "named": dict(self.named.most_common(4))}


def _diagnose_draws(diagnoser: Any, embedded: Any, n: int, trials: int, rng: np.random.Generator
                    ) -> list[tuple[Any, Any]]:
    """``trials`` subsets of n pool images, diagnosed as after a detector fired (forced) and by the own
    gate."""
    out = []
    for _ in range(trials):
        sample = embedded.subset(np.sort(rng.choice(len(embedded), n, replace=False)))
        out.append((diagnoser.diagnose(sample, drift_detected=True), diagnoser.diagnose(sample)))
    return out


def score_held_out_families(name: str, options: dict[str, Any], views: LabelFreeViews,
                            sizes: Sequence[int], trials: int, seed: int, rng: np.random.Generator,
                            progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Refit without each bank family and diagnose its shifts: "unknown shift" is the right answer.

    Returns cells keyed "family|n|severities" (severities "all" or ">=3") and per-family fit seconds.
    """
    from zeal_core.diagnose import create_diagnoser

    collapse = collapse_shifts(views)
    families = sorted({shift_family(s.spec.text) for s in views.bank})
    cells: dict[str, Any] = {}
    for step, family in enumerate(families):
        start = time.perf_counter()
        bank = [s for s in views.bank if shift_family(s.spec.text) != family]
        diagnoser = create_diagnoser(name, **options).fit(views.reference, bank, seed=seed)
        seconds = time.perf_counter() - start
        texts = [text for text in views.texts("bank") if shift_family(text) == family]
        for n in sizes:
            tallies = {"all": _Tally(), ">=3": _Tally()}
            for text in texts:
                for forced, own in _diagnose_draws(diagnoser, views.shifted[text], n, trials, rng):
                    for key, tally in tallies.items():
                        if key == "all" or shift_severity(text) >= TARGET_MIN_SEVERITY:
                            tally.add(forced, own, (), text in collapse)
            for key, tally in tallies.items():
                cells[f"{family}|{n}|{key}"] = {"family": family, "n": n, "severities": key,
                                                "fit_seconds": seconds, **tally.summary()}
        report(progress, "held-out families", step + 1, len(families), f"{family} held out")
    return cells


def score_unseen(diagnoser: Any, views: LabelFreeViews, sizes: Sequence[int], trials: int,
                 rng: np.random.Generator) -> dict[str, Any]:
    """Kinds never in a bank, diagnosed by the full diagnoser; cells keyed "group|kind|n"."""
    collapse = collapse_shifts(views)
    cells: dict[str, Any] = {}
    for group in ("new", "external", "compound"):
        for n in sizes:
            by_kind: dict[str, _Tally] = {}
            for text in views.texts(group):
                tally = by_kind.setdefault(shift_kind(text), _Tally())
                for forced, own in _diagnose_draws(diagnoser, views.shifted[text], n, trials, rng):
                    tally.add(forced, own, right_families(text), text in collapse)
            for kind, tally in by_kind.items():
                cells[f"{group}|{kind}|{n}"] = {"group": group, "kind": kind, "n": n, **tally.summary()}
    return cells


def score_collapse_known(diagnoser: Any, views: LabelFreeViews, sizes: Sequence[int], trials: int,
                         rng: np.random.Generator) -> dict[str, Any]:
    """Bank kinds that collapse predictions, diagnosed by the full diagnoser: never "label shift"."""
    collapse = [text for text in collapse_shifts(views) if views.groups[text] == "bank"]
    out = {}
    for n in sizes:
        tally = _Tally()
        for text in collapse:
            for forced, own in _diagnose_draws(diagnoser, views.shifted[text], n, trials, rng):
                tally.add(forced, own, right_families(text), True)
        out[str(n)] = {"shifts": collapse, **tally.summary()}
    return out
