"""bench estimate scoring on synthetic views (no model): leave-one-out fits, tables, figure; feature gate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import _estimate_report as report
from benchmarks import _estimate_score as bench
from benchmarks._labelfree_views import LabelFreeViews, shift_family
from tests.test_estimate import CLASSES, FAST, synthetic, toy_bank
from zeal_core.embed import Embeddings
from zeal_core.estimate import AccuracyEstimator, create_estimator, register_estimator
from zeal_core.estimate.feature_shift import FeatureShift, gate
from zeal_core.plugins import Registry
from zeal_core.shifts import ShiftedSet


def toy_views() -> LabelFreeViews:
    """Pool shifts of the toy bank's kinds (scored leave one family out), one new kind and one external."""
    shifted, groups = {}, {}
    for index, shifted_set in enumerate(toy_bank()):
        text, severity = shifted_set.spec.text, shifted_set.severity
        collapse = 0.1 * severity if shifted_set.corruption == "fog" else 0.0
        shifted[text] = synthetic(300, 30 + index, scale=3.0 - 0.5 * severity, collapse=collapse)
        groups[text] = "bank"
    shifted["rotation:3"], groups["rotation:3"] = synthetic(300, 40, scale=1.5), "new"
    shifted["ext/rain:3"], groups["ext/rain:3"] = synthetic(300, 41, scale=2.0, collapse=0.2), "external"
    return LabelFreeViews(reference=synthetic(400, 21), bank=toy_bank(), pool=synthetic(300, 20),
                          shifted=shifted, groups=groups,
                          info={"dataset": "toy", "version": "v", "image_size": 8, "classes": CLASSES,
                                "reference_n": 400, "pool_n": 300, "bank_shifts": 6,
                                "reference_accuracy": 0.8, "clean_pool_accuracy": 0.8})


class _Memory(AccuracyEstimator):
    """A bank-fitted stand-in: remembers which corruptions it was fitted on, and answers 0.5."""

    name = "memory-test"
    description = "test double"
    needs_bank = True

    def __init__(self, level: float = 0.9, bootstrap: int = 500, seed: int = 0, folds: int = 5) -> None:
        """``folds`` as shift-calibrated takes it (the bench turns its inner cross-fitting off with 0)."""
        super().__init__(level=level, bootstrap=bootstrap, seed=seed)
        self.folds = folds

    def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
        self.seen = {shifted.corruption for shifted in bank}

    def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict]:
        return 0.5, 0.4, 0.6, {"seen": sorted(self.seen)}


def test_bench_scores_bank_estimators_leave_one_family_out(monkeypatch, tmp_path: Path) -> None:
    import zeal_core.estimate.base as base

    registry: Registry = Registry("estimator")
    for name in ("atc-mc", "pm-atc", "shift-calibrated"):
        registry.add(name, base._REGISTRY.get(name))
    monkeypatch.setattr(base, "_REGISTRY", registry)
    register_estimator(_Memory)
    views = toy_views()
    names = ["atc-mc", "pm-atc", "shift-calibrated", "memory-test"]
    fitted = bench.fitted_estimators(views, names, seed=0)
    assert set(fitted["memory-test"]) == {"noise", "weather", "digital", "*"}
    for family, estimator in fitted["memory-test"].items():  # a fold never saw its family
        assert family == "*" or not {shift_family(kind + ":1") for kind in estimator.seen} & {family}
    rows = bench.score_full(views, fitted)
    assert len(rows) == 9 and {row["group"] for row in rows} == {"clean", "bank", "new", "external"}
    for row in rows:
        fit = bench.fit_for(fitted["memory-test"], views, row["shift"])
        seen = {shift_family(kind + ":1") for kind in fit.seen}
        assert row["group"] != "bank" or row["family"] not in seen
    unknown = SimpleNamespace(diagnose=lambda sample: SimpleNamespace(verdict="unknown shift", best=None))
    diagnosers = {"*": unknown}  # every draw "unknown": what a check shows is then an extrapolation
    rows = bench.score_full(views, fitted, diagnosers)
    draws = bench.score_draws(views, fitted, sizes=(50,), trials=2, seed=0, diagnosers=diagnosers)
    assert draws["50"][bench.SHOWN]["held_out"]["extrapolation"] == 1.0
    cell = draws["50"]["shift-calibrated"]
    assert cell["bank"]["draws"] == 12 and cell["held_out"]["draws"] == 16 and draws["50"]["trials"] == 2
    assert set(cell["by_kind"]) == {"gaussian_noise", "fog", "contrast", "rotation", "ext/rain"}
    assert 0 <= cell["held_out"]["coverage"] <= 1 and cell["held_out"]["extrapolation"] >= 0
    summary = bench.summarise(rows, [*fitted, bench.SHOWN])
    assert summary["pm-atc"]["bank"]["shifts"] == 6 and summary["pm-atc"]["external"]["shifts"] == 1
    result = {"info": views.info, "machine": "test machine", "rows": rows, "summary": summary, "draws": draws,
              "level": 0.9, "speed": bench.speed(views, list(fitted), seed=0, repeats=1),
              "calibration": {"temperature": 1.0, "ece_before": 0.1, "ece_after": 0.02},
              "label_shift": bench.label_shift(views, fitted), "ablation": bench.ablation(views, 0, trials=1),
              "clean_resplits": bench.clean_resplits(views, ["atc-mc", "memory-test"], seed=0, splits=2)}
    result["targets"] = report.targets(result)
    assert result["targets"]["estimator"] == bench.SHOWN and result["targets"]["n"] == 50
    result["targets_estimator"] = report.targets(result, "shift-calibrated")
    assert result["clean_resplits"]["errors"]["atc-mc"]["sd"] >= 0
    table = report.markdown(result)
    assert "| pm-atc |" in table and "test machine" in table and "Label shift" in table
    assert "re-splits" in table and "Targets (shift-calibrated" in table and "| ext/rain |" in table
    assert f"Targets ({bench.SHOWN}" in table
    figure = report.scatter(result, tmp_path / "scatter.png")
    assert figure.stat().st_size > 1000


def test_feature_shift_ignores_a_new_class_mix_but_sees_moved_images() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (CLASSES, 16))
    spread = np.linspace(0.5, 2.0, CLASSES)  # classes differ in how tight they are

    def features(classes: np.ndarray, moved: float = 0.0) -> np.ndarray:
        noise = rng.standard_normal((len(classes), 16)) * spread[classes, None]
        return centres[classes] + noise + moved * rng.standard_normal((len(classes), 16))

    labels = rng.integers(0, CLASSES, 600)
    shift = FeatureShift(features(labels), labels, CLASSES)
    base = shift.reference_items.mean()
    loose = np.full(200, CLASSES - 1)  # only the loosest class: a label shift, the images are as usual
    assert abs(shift.item_scores(features(loose), loose).mean() - base) < 0.05
    same = rng.integers(0, CLASSES, 200)
    assert abs(shift.item_scores(features(same), same).mean() - base) < 0.05
    assert shift.item_scores(features(same, moved=2.0), same).mean() - base > 0.25
    assert gate(0.0, 0.05, 0.25) == 0.0 and gate(1.0, 0.05, 0.25) == 1.0
    assert gate(0.15, 0.05, 0.25) == pytest.approx(0.5)


def test_prior_matching_stays_out_of_a_pure_label_shift() -> None:
    """Only class-0 images, looking as usual: pm-atc says what ATC says instead of reading model error."""
    reference = synthetic(1000, 22)
    sample = synthetic(3000, 23)
    ones = sample.subset(np.flatnonzero(sample.preds == 0)[:300])
    atc = create_estimator("atc-mc", **FAST).fit(reference).estimate(ones)
    matched = create_estimator("pm-atc", **FAST).fit(reference).estimate(ones)
    assert matched.details["class_shift"] > 0.5 and matched.details["gate"] < 0.1
    assert abs(matched.accuracy - atc.accuracy) < 0.01


@pytest.mark.parametrize("verdict", ["covariate shift", "no drift"])
def test_shown_by_a_check_is_what_a_check_shows_first(verdict: str) -> None:
    """The bench's "shown by a check" orders the estimates as a check lists them (shift-calibrated first),
    whatever order the bench fitted them in; only a label-shift verdict moves pm-atc up."""
    views = toy_views()
    fitted = bench.fitted_estimators(views, ["atc-mc", "average-confidence", "pm-atc", "shift-calibrated"],
                                     seed=0)
    diagnosis = SimpleNamespace(verdict=verdict, best=SimpleNamespace(family=None))
    sample = views.pool
    results = bench._estimates(fitted, {"*": SimpleNamespace(diagnose=lambda _: diagnosis)}, views, "clean",
                               sample)
    assert results[bench.SHOWN].estimator == "shift-calibrated"
    label = SimpleNamespace(verdict="label shift", best=SimpleNamespace(family=None))
    results = bench._estimates(fitted, {"*": SimpleNamespace(diagnose=lambda _: label)}, views, "clean",
                               sample)
    assert results[bench.SHOWN].estimator == "pm-atc"
