"""Drift diagnosis on digits: names strong corruptions, keeps clean samples clean, recovers label shift.

The "model" is a random-init ``test_resnet`` at 32 px whose classifier head is fitted by logistic regression
on the digits training split (~90 % val accuracy, a few seconds on 2 cores): its features react to
corruptions and its predictions are good enough for black-box shift estimation. The diagnoser is fitted on
the reference half of the validation split and scored on the disjoint sample half.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from benchmarks._labelfree_views import LabelFreeViews
from benchmarks.diagnose import (
    confusion_figure,
    draw_label_shifted,
    markdown,
    score_clean,
    score_corruptions,
    score_label_shift,
    targets,
)
from zeal_core.corruptions import DriftSpec, corruption_info
from zeal_core.data import load_dataset
from zeal_core.diagnose import (
    Diagnosis,
    SignatureDiagnoser,
    bbse,
    confusion_given_true,
    create_diagnoser,
    diagnoser_info,
    list_diagnosers,
)
from zeal_core.diagnose.label_shift import project_to_simplex, simplex_least_squares
from zeal_core.embed import compute_embeddings, part_positions
from zeal_core.errors import ConfigError
from zeal_core.models import ModelConfig, create_model
from zeal_core.shifts import ShiftedSet, bank_specs, build_shift_bank

KINDS = ("gaussian_noise", "impulse_noise", "defocus_blur", "fog", "contrast", "pixelate")
SEVERITIES = (1.0, 3.0, 5.0)
# Small calibration so the fit takes about a second; the defaults are for real use.
FAST = {"clean_trials": 40, "label_shift_trials": 10, "calibration_sizes": (25, 50)}
N = 100


class World:
    """Everything the tests share: model, reference + bank, sample-half images and a fitted diagnoser."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.config = ModelConfig(arch="test_resnet", num_classes=10, image_size=32)
        self.model = create_model(self.config).eval()
        digits = load_dataset("digits")
        self._fit_head(*digits.split("train"))
        images, labels = digits.split("val")
        reference = torch.from_numpy(part_positions(len(images), "reference"))
        sample = torch.from_numpy(part_positions(len(images), "sample"))
        self.reference_images, self.reference_labels = images[reference], labels[reference]
        self.sample_images, self.sample_labels = images[sample], labels[sample]
        self.reference = self.embed(self.reference_images, self.reference_labels)
        self.bank = build_shift_bank(self.model, self.config, self.reference_images, self.reference_labels,
                                     bank_specs(KINDS, SEVERITIES), "cpu")
        self.sample = self.embed(self.sample_images, self.sample_labels)
        self.diagnoser = create_diagnoser("signature", **FAST).fit(self.reference, self.bank)

    def _fit_head(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        train = compute_embeddings(self.model, self.config, images, "cpu")
        mean, scale = train.features.mean(0), train.features.std(0) + 1e-6
        fitted = LogisticRegression(C=1.0, max_iter=500).fit((train.features - mean) / scale, labels.numpy())
        head = self.model.get_classifier()
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(fitted.coef_ / scale).float())
            head.bias.copy_(torch.from_numpy(fitted.intercept_ - (fitted.coef_ / scale) @ mean).float())

    def embed(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        return compute_embeddings(self.model, self.config, images, "cpu", labels=labels)

    def shifted_sample(self, spec: str, seed: int = 5, n: int = N):
        """The first n sample-half images under ``spec`` (labels kept: the diagnoser must drop them)."""
        return self.embed(DriftSpec.parse(spec).apply(self.sample_images[:n], seed=seed),
                          self.sample_labels[:n])


@pytest.fixture(scope="module")
def world() -> World:
    return World()


# Registry and options ---------------------------------------------------------------------------------------


def test_registry_lists_signature_and_errors_list_the_choices() -> None:
    assert "signature" in list_diagnosers()
    assert diagnoser_info("signature").description
    assert isinstance(create_diagnoser(), SignatureDiagnoser)
    with pytest.raises(ConfigError, match="unknown diagnoser 'magic': choose one of signature"):
        create_diagnoser("magic")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['bogus'\]; known: .*components"):
        create_diagnoser("signature", bogus=1)
    with pytest.raises(ConfigError, match="shrinkage"):
        create_diagnoser("signature", shrinkage=2.0)
    with pytest.raises(ConfigError, match="calibration_sizes"):
        create_diagnoser("signature", calibration_sizes=())


def test_fit_and_diagnose_check_their_inputs(world: World) -> None:
    fresh = create_diagnoser("signature", **FAST)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.diagnose(world.sample)
    with pytest.raises(ConfigError, match="needs true labels"):
        fresh.fit(world.reference.without_labels(), world.bank)
    with pytest.raises(ConfigError, match="empty"):
        fresh.fit(world.reference, [])
    shuffled = replace(world.bank[0].embeddings, labels=world.bank[0].embeddings.labels[::-1].copy())
    with pytest.raises(ConfigError, match="reference labels in order"):
        fresh.fit(world.reference, [ShiftedSet(world.bank[0].spec, shuffled)])
    with pytest.raises(ConfigError, match="twice"):
        fresh.fit(world.reference, [world.bank[0], world.bank[0]])
    narrow = replace(world.sample, features=world.sample.features[:, :10].copy())
    with pytest.raises(ConfigError, match="same model"):
        world.diagnoser.diagnose(narrow)
    with pytest.raises(ConfigError, match="at least 2"):
        world.diagnoser.diagnose(world.sample.subset([0]))
    with pytest.raises(ConfigError, match="drift_detected"):
        world.diagnoser.diagnose(world.sample, drift_detected="yes")


# What the diagnosis says ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gaussian_noise", "fog", "contrast", "pixelate"])
def test_strong_corruption_is_named_top1_with_its_severity(world: World, kind: str) -> None:
    diagnosis = world.diagnoser.diagnose(world.shifted_sample(f"{kind}:5"))
    best = diagnosis.best
    assert diagnosis.verdict == "covariate shift"
    assert best.kind == kind and best.family == corruption_info(kind).family
    assert best.severity == pytest.approx(5.0, abs=1.0)
    assert 0.5 < best.score <= 1.0
    assert sum(cause.score for cause in diagnosis.causes) == pytest.approx(1.0)
    scores = [cause.score for cause in diagnosis.causes]
    assert scores == sorted(scores, reverse=True)


def test_estimated_severity_grows_with_the_true_severity(world: World) -> None:
    estimates = [world.diagnoser.diagnose(world.shifted_sample(f"contrast:{level}"), drift_detected=True)
                 .cause("contrast").severity for level in (1, 3, 5)]
    assert estimates[0] < estimates[1] < estimates[2]
    assert all(abs(estimate - level) < 1.0 for estimate, level in zip(estimates, (1, 3, 5), strict=True))


def test_clean_samples_give_no_drift_and_drifted_pairs_do_not(world: World) -> None:
    verdicts, drifted = [], []
    for seed in range(6):
        rows = np.sort(np.random.default_rng(seed).choice(len(world.sample), N, replace=False))
        verdicts.append(world.diagnoser.diagnose(world.sample.subset(rows)).verdict)
        images = DriftSpec.parse("fog:3").apply(world.sample_images[torch.from_numpy(rows)], seed=seed)
        drifted.append(world.diagnoser.diagnose(world.embed(images)).verdict)
    assert verdicts.count("no drift") >= 5, verdicts  # the gate's false-alarm rate is calibrated to 4 %
    assert all(verdict == "covariate shift" for verdict in drifted), drifted


@pytest.mark.parametrize("heavy", [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)])
def test_label_shift_recovers_the_sample_proportions(world: World, heavy: tuple[int, ...]) -> None:
    """Half the classes make up 90 % of the sample (each class's images drawn without repeats)."""
    rng = np.random.default_rng(sum(heavy))
    prior = np.full(10, 0.02)
    prior[list(heavy)] = 0.18
    labels = np.asarray(world.sample.labels)
    rows = draw_label_shifted(labels, N, prior, rng)
    actual = np.bincount(labels[rows], minlength=10) / len(rows)
    diagnosis = world.diagnoser.diagnose(world.sample.subset(rows))
    estimate = np.array([diagnosis.estimated_class_proportions[j] for j in range(10)])
    # Two binomial standard errors per class at this n, summed: the error of counting the sample's classes
    # with a classifier that errs on a few percent of images stays well inside it.
    tolerance = 2 * np.sqrt(actual * (1 - actual) / len(rows)).sum()
    assert np.abs(estimate - actual).sum() < tolerance
    reference = np.array([diagnosis.reference_class_proportions[j] for j in range(10)])
    assert np.abs(estimate - actual).sum() < 0.5 * np.abs(reference - actual).sum()  # it did move
    assert diagnosis.verdict == "label shift"
    assert diagnosis.best.kind == "label_shift" and diagnosis.best.family == "label"
    assert sum(diagnosis.reference_class_proportions.values()) == pytest.approx(1.0)


def test_labels_are_never_used(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = world.shifted_sample("fog:3")
    scrambled = replace(sample, labels=np.random.default_rng(0).permutation(sample.labels))
    outputs = [world.diagnoser.diagnose(version).to_dict()
               for version in (sample, sample.without_labels(), scrambled)]
    for output in outputs:
        output["details"].pop("runtime_s")
    assert outputs[0] == outputs[1] == outputs[2]
    seen = []
    original = SignatureDiagnoser._diagnose

    def spy(self, received, drift_detected):
        seen.append(received.labels)
        return original(self, received, drift_detected)

    monkeypatch.setattr(SignatureDiagnoser, "_diagnose", spy)
    world.diagnoser.diagnose(sample)
    assert seen == [None]


def test_drift_detected_overrides_the_own_gate(world: World) -> None:
    strong = world.shifted_sample("contrast:5")
    forced_clean = world.diagnoser.diagnose(strong, drift_detected=False)
    assert forced_clean.verdict == "no drift" and forced_clean.best.kind == "no_drift"
    clean = world.sample.subset(np.arange(N))
    forced_drift = world.diagnoser.diagnose(clean, drift_detected=True)
    assert forced_drift.verdict != "no drift"
    assert forced_drift.cause("no_drift") is None
    assert sum(cause.score for cause in forced_drift.causes) == pytest.approx(1.0)


def test_partial_drift_gets_its_share_and_image_scores_rank_the_corrupted_images_first(world: World) -> None:
    spec = DriftSpec.parse("contrast:5@0.5")
    images = world.sample_images[:N]
    affected = spec.affected_mask(N, seed=3).numpy()
    diagnosis = world.diagnoser.diagnose(world.embed(spec.apply(images, seed=3)))
    scores = np.asarray(diagnosis.details["image_scores"])
    assert diagnosis.best.kind == "contrast" and scores.shape == (N,)
    assert diagnosis.best.details["fraction"] == 0.5  # the mixture signatures cover shares 0.25-0.75
    # AUC of the per-image score for "this image was corrupted"
    auc = (scores[affected][:, None] > scores[~affected][None, :]).mean()
    assert auc > 0.9


def test_unknown_shift_for_a_corruption_outside_the_bank(world: World) -> None:
    """Fog held out of the bank: its samples are far from every remaining signature."""
    bank = [shifted for shifted in world.bank if shifted.corruption != "fog"]
    diagnoser = create_diagnoser("signature", **FAST, fractions=(1.0,)).fit(world.reference, bank)
    diagnosis = diagnoser.diagnose(world.shifted_sample("fog:5"), drift_detected=True)
    assert diagnosis.verdict == "unknown shift"
    assert diagnosis.best.kind == "unknown" and diagnosis.best.score > 0.5
    assert world.diagnoser.diagnose(world.shifted_sample("fog:5")).verdict == "covariate shift"


def test_diagnosis_to_dict_is_json_ready(world: World) -> None:
    diagnosis = world.diagnoser.diagnose(world.shifted_sample("pixelate:5"))
    assert isinstance(diagnosis, Diagnosis)
    assert len(diagnosis.top(3)) == 3 and diagnosis.top(1)[0] == diagnosis.best
    with pytest.raises(ConfigError, match="k >= 1"):
        diagnosis.top(0)
    text = json.dumps(diagnosis.to_dict(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["verdict"] == "covariate shift" and loaded["causes"][0]["kind"] == "pixelate"
    assert set(loaded["causes"][0]) == {"kind", "family", "score", "severity", "details"}
    assert loaded["details"]["n"] == N and loaded["details"]["diagnoser"] == "signature"
    assert json.loads(json.dumps(diagnosis.best.to_dict()))["family"] == "digital"


# BBSE and its solver ----------------------------------------------------------------------------------------


def test_simplex_least_squares_matches_a_generic_solver() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        classes = int(rng.integers(2, 8))
        matrices = rng.random((3, classes, classes)) ** 3
        matrices /= matrices.sum(1, keepdims=True)
        target = rng.dirichlet(np.full(classes, 0.4))
        prior = rng.dirichlet(np.ones(classes))
        ridge = 10 ** rng.uniform(-4, -1)
        solved = simplex_least_squares(matrices, target, prior, ridge)
        for matrix, solution in zip(matrices, solved, strict=True):
            def objective(p, matrix=matrix, target=target, prior=prior, ridge=ridge):
                return np.sum((matrix @ p - target) ** 2) + ridge * np.sum((p - prior) ** 2)

            reference = minimize(objective, prior, method="SLSQP", bounds=[(0, 1)] * classes,
                                 constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}],
                                 options={"ftol": 1e-14, "maxiter": 500})
            assert solution.min() >= 0 and solution.sum() == pytest.approx(1.0)
            assert objective(solution) <= reference.fun + 1e-10
    projected = project_to_simplex(np.array([[2.0, 0.0, -1.0]]))
    np.testing.assert_allclose(projected, [[1.0, 0.0, 0.0]])


def test_bbse_inverts_the_confusion_matrix() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 4000)
    preds = np.where(rng.random(4000) < 0.8, labels, rng.integers(0, 4, 4000))  # 80 % right + noise
    confusion = confusion_given_true(preds, labels, 4)
    target = np.array([0.7, 0.1, 0.1, 0.1])
    counts = np.round(target * 20000).astype(int)
    sample_preds = np.concatenate([rng.choice(4, count, p=confusion[:, j]) for j, count in enumerate(counts)])
    estimate = bbse(confusion, sample_preds, np.full(4, 0.25))
    assert np.abs(estimate - target).sum() < 0.03
    # the raw prediction histogram is much further off: the correction is doing the work
    histogram = np.bincount(sample_preds, minlength=4) / len(sample_preds)
    assert np.abs(histogram - target).sum() > 0.15


# The benchmark's pieces -------------------------------------------------------------------------------------


def test_draw_label_shifted_follows_the_prior() -> None:
    labels = np.repeat(np.arange(3), 50)
    rows = draw_label_shifted(labels, 120, np.array([0.0, 0.25, 0.75]), np.random.default_rng(0))
    counts = np.bincount(labels[rows], minlength=3)
    assert len(rows) == 120 and counts[0] == 0 and counts[2] > counts[1]
    assert len(set(rows[labels[rows] == 1].tolist())) == counts[1]  # no repeats while a class has enough


def test_bench_tables_from_a_small_grid(world: World) -> None:
    shifted = {}
    for kind in ("contrast", "fog"):
        spec = DriftSpec.parse(f"{kind}:5")
        shifted[spec.text] = world.embed(spec.apply(world.sample_images, seed=1), world.sample_labels)
    views = LabelFreeViews(reference=world.reference, bank=world.bank, pool=world.sample, shifted=shifted,
                           groups=dict.fromkeys(shifted, "bank"), class_names=tuple(map(str, range(10))),
                           info={"dataset": "digits", "version": "test", "reference_n": 225,
                                 "pool_n": len(world.sample)})
    rng = np.random.default_rng(0)
    result = {"info": views.info, "bank_sets": len(world.bank), "fit_seconds": 1.0,
              "speed_s": {"100": 0.01},
              "machine": {"description": "test machine"},
              "corruptions": score_corruptions(world.diagnoser, views, ["contrast", "fog"], [5.0], [N], 2,
                                               rng),
              "clean": score_clean(world.diagnoser, world.sample, [N], 4, rng),
              "label_shift": score_label_shift(world.diagnoser, world.sample, [N], 3, 1.0, rng)}
    cell = result["corruptions"]["cells"][f"{N}|5"]
    assert cell["top1"]["trials"] == 4 and cell["top1"]["rate"] == 1.0
    result["targets"] = targets(result)
    assert result["targets"]["top1"]["rate"] == 1.0
    table = markdown(result)
    assert "| 100 | 5 | 100 ± 0 |" in table and "test machine" in table
    assert confusion_figure(result)[:8] == b"\x89PNG\r\n\x1a\n"
