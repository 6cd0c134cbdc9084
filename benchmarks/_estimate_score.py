"""``bench estimate`` scoring: fits that never saw the scored shift, errors, interval coverage, summaries.

Held-out design. An estimator fitted on the bank is scored on a bank kind only by a fit *without that
kind's whole family* (leave one family out: noise, blur, weather, digital); kinds never in any bank (the
registered geometry and capture kinds, the external shifts of ``_external_shifts``) and compounds are
scored by the fit on the whole bank. Everything is scored on the sample pool, whose images no fit saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks._harness import median_seconds
from benchmarks._labelfree_views import LabelFreeViews, shift_family, shift_kind
from zeal_core.progress import ProgressCallback, report

WITHIN = 0.05  # "within 5 points"
SHOWN = "shown by a check"  # the estimate a warm check shows first: ``preferred_order`` given its diagnosis
HELD_OUT_GROUPS = ("bank", "new", "external")  # shifts no fit saw anything of (bank: its family left out)


def fitted_estimators(views: LabelFreeViews, names: Sequence[str], seed: int) -> dict[str, dict[str, Any]]:
    """name -> {held-out family or "*": fitted estimator}; bank-free estimators have "*" only."""
    from zeal_core.estimate import create_estimator, estimator_info

    families = sorted({shift_family(shifted.spec.text) for shifted in views.bank})
    fitted: dict[str, dict[str, Any]] = {}
    for name in names:
        if not estimator_info(name).needs_bank:
            fitted[name] = {"*": create_estimator(name, seed=seed).fit(views.reference)}
            continue
        folds = {family: create_estimator(name, seed=seed).fit(
            views.reference, [s for s in views.bank if shift_family(s.spec.text) != family])
            for family in families} if len(families) > 1 else {}
        folds["*"] = create_estimator(name, seed=seed).fit(views.reference, views.bank)
        fitted[name] = folds
    return fitted


def fitted_diagnosers(views: LabelFreeViews, seed: int) -> dict[str, Any]:
    """{held-out family or "*": the signature diagnoser fitted without that family (or on the whole bank)}."""
    from zeal_core.diagnose import create_diagnoser

    families = sorted({shift_family(shifted.spec.text) for shifted in views.bank})
    fits = {family: create_diagnoser("signature").fit(
        views.reference, [s for s in views.bank if shift_family(s.spec.text) != family], seed=seed)
        for family in families} if len(families) > 1 else {}
    fits["*"] = create_diagnoser("signature").fit(views.reference, views.bank, seed=seed)
    return fits


def _estimates(fitted: dict[str, dict[str, Any]], diagnosers: dict[str, Any] | None, views: LabelFreeViews,
               text: str, sample: Any) -> dict[str, Any]:
    """Every estimator's estimate of ``sample`` and, with diagnosers, the one a check shows first."""
    from zeal_core.reference.labelfree import DEFAULT_ESTIMATORS, preferred_order

    results = {name: fit_for(fits, views, text).estimate(sample) for name, fits in fitted.items()}
    if diagnosers:
        diagnosis = fit_for(diagnosers, views, text).diagnose(sample)
        # in the order a check lists them (shift-calibrated first); preferred_order only moves pm-atc up
        rank = {name: index for index, name in enumerate(DEFAULT_ESTIMATORS)}
        ordered = sorted(results.values(), key=lambda estimate: rank.get(estimate.estimator, len(rank)))
        results[SHOWN] = preferred_order(ordered, diagnosis)[0]
    return results


def fit_for(fits: dict[str, Any], views: LabelFreeViews, text: str) -> Any:
    """The fit that never saw anything of ``text``'s family (bank kinds), else the whole-bank fit."""
    if views.groups.get(text) == "bank":
        return fits.get(shift_family(text), fits["*"])
    return fits["*"]


def _row(views: LabelFreeViews, text: str, sample: Any) -> dict[str, Any]:
    group = "clean" if text == "clean" else views.groups[text]
    return {"shift": text, "kind": "clean" if text == "clean" else shift_kind(text),
            "family": shift_family(text), "group": group, "n": len(sample), "true": sample.accuracy,
            "estimates": {}}


def score_full(views: LabelFreeViews, fitted: dict[str, dict[str, Any]],
               diagnosers: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per shift of the whole pool: true accuracy and every estimator's estimate and interval."""
    rows = []
    for text, sample in [("clean", views.pool), *views.shifted.items()]:
        row = _row(views, text, sample)
        for name, result in _estimates(fitted, diagnosers, views, text, sample).items():
            row["estimates"][name] = {"accuracy": result.accuracy, "low": result.low, "high": result.high,
                                      "extrapolation": result.extrapolation}
        rows.append(row)
    return rows


def score_draws(views: LabelFreeViews, fitted: dict[str, dict[str, Any]], sizes: Sequence[int], trials: int,
                seed: int, progress: ProgressCallback | None = None,
                diagnosers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every estimator on ``trials`` random draws of each size from every shifted pool (the same draws for
    every estimator): error against the draw's own accuracy, coverage of the draw's and of the stream's
    accuracy (the whole shifted pool), extrapolation flags; summaries per group and per kind."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    shifts = [("clean", views.pool), *views.shifted.items()]
    for step, size in enumerate(sizes):
        records: dict[str, list[tuple]] = {name: [] for name in [*fitted, *([SHOWN] if diagnosers else [])]}
        usable = [(text, sample) for text, sample in shifts if len(sample) >= size]
        for text, sample in usable:
            row = _row(views, text, sample)
            for _ in range(trials):
                draw = sample.subset(np.sort(rng.choice(len(sample), size=size, replace=False)))
                for name, result in _estimates(fitted, diagnosers, views, text, draw).items():
                    records[name].append((row["group"], row["kind"], result.accuracy - draw.accuracy,
                                          result.low <= draw.accuracy <= result.high,
                                          result.low <= sample.accuracy <= result.high,
                                          result.extrapolation, result.high - result.low))
        out[str(size)] = {name: draw_summary(values) for name, values in records.items()}
        out[str(size)].update(trials=trials, shifts=len(usable))
        report(progress, "draws", step + 1, len(sizes), f"n = {size} done")
    return out


def _cell(records: list[tuple]) -> dict[str, Any]:
    errors = np.abs([record[2] for record in records])
    covered = np.asarray([record[3] for record in records], dtype=float)
    stream = np.asarray([record[4] for record in records], dtype=float)
    return {"mae": float(errors.mean()), "mae_se": _se(errors), "within_5": float((errors <= WITHIN).mean()),
            "coverage": float(covered.mean()), "coverage_se": _share_se(covered),
            "stream_coverage": float(stream.mean()),
            "extrapolation": float(np.mean([record[5] for record in records])),
            "width": float(np.mean([record[6] for record in records])), "draws": len(records)}


def draw_summary(records: list[tuple]) -> dict[str, Any]:
    """Per group (and all held-out groups together), and per kind of the held-out groups."""
    summary: dict[str, Any] = {}
    for group in ("bank", "new", "external", "compound", "clean"):
        chosen = [record for record in records if record[0] == group]
        if chosen:
            summary[group] = _cell(chosen)
    held = [record for record in records if record[0] in HELD_OUT_GROUPS]
    if held:
        summary["held_out"] = _cell(held)
        kinds = sorted({record[1] for record in held})
        summary["by_kind"] = {kind: _cell([record for record in held if record[1] == kind]) for kind in kinds}
    return summary


def summarise(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Whole-pool MAE (standard error over shifts) per estimator: per group, per family, clean."""
    summary: dict[str, Any] = {}
    for name in names:
        def errors(select: Any, name: str = name) -> np.ndarray:
            return np.array([abs(row["estimates"][name]["accuracy"] - row["true"])
                             for row in rows if select(row)])

        entry: dict[str, Any] = {}
        for label in ("bank", "new", "external", "compound"):
            values = errors(lambda r, label=label: r["group"] == label)
            if len(values):
                entry[label] = {"mae": float(values.mean()), "se": _se(values), "max": float(values.max()),
                                "within_5": float((values <= WITHIN).mean()), "shifts": len(values)}
        entry["families"] = {}
        for family in sorted({row["family"] for row in rows if row["group"] == "bank"}):
            values = errors(lambda r, f=family: r["family"] == f and r["group"] == "bank")
            entry["families"][family] = {"mae": float(values.mean()), "se": _se(values),
                                         "shifts": len(values)}
        clean = [row for row in rows if row["shift"] == "clean"]
        if clean:
            estimate = clean[0]["estimates"][name]
            entry["clean"] = {"true": clean[0]["true"], "estimate": estimate["accuracy"],
                              "error": estimate["accuracy"] - clean[0]["true"],
                              "low": estimate["low"], "high": estimate["high"]}
        summary[name] = entry
    return summary


def _se(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _share_se(values: np.ndarray) -> float:
    share = float(np.mean(values))
    return float(np.sqrt(share * (1 - share) / len(values))) if len(values) else float("nan")


def speed(views: LabelFreeViews, names: Sequence[str], seed: int, repeats: int = 5) -> dict[str, Any]:
    """Fit seconds (on the reference and the whole bank) and median estimate ms at n = 100 and 1000."""
    from zeal_core.estimate import create_estimator, estimator_info

    clean = views.pool
    large = clean.subset(np.random.default_rng(seed).integers(0, len(clean), 1000))
    out = {}
    for name in names:
        start = time.perf_counter()
        bank = views.bank if estimator_info(name).needs_bank else None
        estimator = create_estimator(name, seed=seed).fit(views.reference, bank)
        fit_seconds = time.perf_counter() - start
        timings = {}
        for n in (100, 1000):
            sample = large.subset(np.arange(n))
            seconds = median_seconds(lambda sample=sample, fitted=estimator: fitted.estimate(sample), repeats)
            timings[f"estimate_ms_n{n}"] = round(1000 * seconds, 1)
        out[name] = {"fit_seconds": round(fit_seconds, 3), "bootstrap": estimator.bootstrap, **timings}
    return out


def label_shift(views: LabelFreeViews, fitted: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Estimates when the pool holds only some classes (a label shift: no pixel changed)."""
    rows = []
    cases = [("clean", (0, 1, 2)), ("clean", (0,))]
    for family in ("noise", "weather"):
        worst = [text for text in views.texts("bank") if shift_family(text) == family and text.endswith(":5")]
        if worst:
            cases.append((worst[0], (0, 1, 2)))
    for text, classes in cases:
        sample = views.pool if text == "clean" else views.shifted[text]
        keep = np.flatnonzero(np.isin(sample.labels, classes))
        if len(keep) < 10:
            continue
        subset = sample.subset(keep)
        rows.append({"shift": text, "classes": list(classes), "n": len(subset), "true": subset.accuracy,
                     "estimates": {name: fit_for(fits, views, text).estimate(subset).accuracy
                                   for name, fits in fitted.items()}})
    return rows


ABLATION = {  # pm-atc variants: what each part adds (options of create_estimator("pm-atc", ...))
    "atc-mc (no matching)": None,
    "matching, no gate": {"gate_low": -1e9, "gate_high": -1e9 + 1},
    "matching + gate (pm-atc)": {},
    "strength 0.5": {"strength": 0.5},
    "strength 2": {"strength": 2.0},
}


def ablation(views: LabelFreeViews, seed: int, trials: int = 5, size: int = 100) -> dict[str, Any]:
    """MAE of pm-atc's variants on the bank kinds (whole pool, and ``trials`` draws of ``size``)."""
    from zeal_core.estimate import create_estimator

    rng = np.random.default_rng(seed)
    shifts = [views.shifted[text] for text in views.texts("bank")]
    draws = [(sample, np.sort(rng.choice(len(sample), size=min(size, len(sample)), replace=False)))
             for sample in shifts for _ in range(trials)]
    out = {}
    for label, options in ABLATION.items():
        estimator = (create_estimator("atc-mc", seed=seed, bootstrap=1) if options is None
                     else create_estimator("pm-atc", seed=seed, bootstrap=1, **options))
        estimator.fit(views.reference)
        full = [abs(estimator.estimate(sample).accuracy - sample.accuracy) for sample in shifts]
        small = [abs(estimator.estimate(sample.subset(rows)).accuracy - sample.subset(rows).accuracy)
                 for sample, rows in draws]
        new = [abs(estimator.estimate(views.shifted[text]).accuracy - views.shifted[text].accuracy)
               for text in views.texts("new", "external")]
        out[label] = {"mae": float(np.mean(full)), f"mae_n{size}": float(np.mean(small)),
                      "mae_new_kinds": float(np.mean(new)) if new else None}
    return {"variants": out, "trials": trials, "size": size, "shifts": len(shifts)}


def clean_resplits(views: LabelFreeViews, names: Sequence[str], seed: int,
                   splits: int = 20) -> dict[str, Any]:
    """Clean error over random re-splits of the clean images (reference + pool) into a reference of the
    same size and a sample of the rest: how much of a single split's clean error is luck. Bank-fitted
    estimators keep the bank of the original reference images (only the clean reference moves)."""
    from zeal_core.estimate import create_estimator, estimator_info

    reference, sample = views.reference, views.pool
    pool = _concatenate(reference, sample)
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(splits):
        order = rng.permutation(len(pool))
        fit_part = pool.subset(np.sort(order[:len(reference)]))
        test_part = pool.subset(np.sort(order[len(reference):]))
        for name in names:
            needs_bank = estimator_info(name).needs_bank
            estimator = create_estimator(name, seed=seed, bootstrap=1, **({"folds": 0} if needs_bank else {}))
            estimator.fit(fit_part, views.bank if needs_bank else None)
            errors[name].append(estimator.estimate(test_part).accuracy - test_part.accuracy)
    summary = {}
    for name, values in errors.items():
        absolute = np.abs(values)
        summary[name] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
                         "mean_abs": float(absolute.mean()), "within_2": float((absolute <= 0.02).mean())}
    return {"splits": splits, "errors": summary}


def _concatenate(first: Any, second: Any) -> Any:
    from zeal_core.embed import Embeddings

    return Embeddings(features=np.vstack([first.features, second.features]),
                      probs=np.vstack([first.probs, second.probs]),
                      preds=np.concatenate([first.preds, second.preds]),
                      labels=np.concatenate([first.labels, second.labels]),
                      indices=np.arange(len(first) + len(second)),
                      logits=np.vstack([first.logits, second.logits]))
