"""The fitted reference: fitted once, never changed by a check; one report for specs, images, embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.reference import (
    FittedReference,
    ReferenceConfig,
    bonferroni,
    fit_reference,
    forget_references,
    get_reference,
)

FAST = ReferenceConfig(reference_n=120, detector_options={"mmd": {"num_permutations": 200}})


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """A registry holding a random-init ResNet-18 on digits (its features still move under strong drift)."""
    config = ModelConfig(arch="resnet18", num_classes=10, image_size=32)
    torch.manual_seed(0)
    models = ModelRegistry(tmp_path_factory.mktemp("models"))
    models.save(create_model(config), model_config=config, dataset="digits",
                dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    forget_references()
    return models


@pytest.fixture(scope="module")
def reference(registry: ModelRegistry) -> FittedReference:
    """One reference for the whole module (fitting embeds the split and fits every detector)."""
    return get_reference("latest", config=FAST, device="cpu", registry=registry)


def _frozen_state(reference: FittedReference) -> list[np.ndarray]:
    arrays = [reference.reference.features.copy(), reference.reference.probs.copy()]
    arrays += [detector.reference.copy() for detector in reference.detectors.values()]
    return arrays


def test_fitted_once_and_never_changed_by_checks(registry: ModelRegistry) -> None:
    reference = get_reference("latest", config=FAST, device="cpu", registry=registry)
    assert get_reference("latest", config=FAST, device="cpu", registry=registry) is reference  # one fit
    before = _frozen_state(reference)
    images = load_dataset("digits").split("val")[0][:40]
    reference.check(DriftSpec.parse("gaussian_noise:5"), n=60, seed=1)
    reference.check(images)
    reference.check(reference.reference.subset(np.arange(30)))
    for old, new in zip(before, _frozen_state(reference), strict=True):
        np.testing.assert_array_equal(old, new)
    assert not reference.reference.features.flags.writeable
    assert all(not detector.reference.flags.writeable for detector in reference.detectors.values())


def test_clean_and_drifted_samples_paired(reference: FittedReference) -> None:
    clean = reference.check("clean", n=80, seed=3)
    noisy = reference.check("gaussian_noise:5", n=80, seed=3)
    assert clean.decision.drift is False and noisy.decision.drift is True
    assert set(noisy.sample.indices) == set(clean.sample.indices)  # the same images, with and without drift
    assert noisy.clean_accuracy == pytest.approx(clean.accuracy)
    assert noisy.decision.threshold == pytest.approx(0.05 / len(reference.detectors))
    assert noisy.n == 80 and noisy.reference_n == 120 and noisy.spec.text == "gaussian_noise:5"
    # Reference and sample never share an image.
    assert not set(reference.reference.indices) & set(noisy.sample.indices)
    assert noisy.images.dtype == torch.uint8 and noisy.images.shape[0] == 80
    assert noisy.coords.shape == (80, 2) and noisy.reference_coords.shape == (120, 2)
    assert noisy.drift_scores.mean() > clean.drift_scores.mean()
    assert noisy.typical[0].score == pytest.approx(noisy.drift_scores.max())
    assert reference.check("gaussian_noise:5", n=80, seed=3) is noisy  # cached
    json.dumps(noisy.to_dict(per_image=True))  # JSON-ready, no NaN


def test_images_and_embeddings_in_give_the_same_answer(reference: FittedReference) -> None:
    images = load_dataset("digits").split("val")[0][:50]
    names = [f"img{i}.png" for i in range(50)]
    from_images = reference.check(images, file_names=names, timings={"decode": 0.25})
    from_embeddings = reference.check(from_images.sample)
    assert [r.p_value for r in from_images.results] == [r.p_value for r in from_embeddings.results]
    assert from_images.accuracy is None and from_images.file_names[0] == "img0.png"
    assert from_images.typical[0].name in names and from_images.timings["decode"] == 0.25
    assert from_images.source == "img0.png, img1.png, img2.png (+47 more)"


def test_parts_and_errors(registry: ModelRegistry, reference: FittedReference) -> None:
    only = reference.check("contrast:5", n=40, parts=["detectors"])
    assert only.coords is None and only.drift_scores is None and only.decision is not None
    with pytest.raises(ConfigError, match="unknown check part"):
        reference.check("clean", parts=["magic"])
    with pytest.raises(ConfigError, match="n = 10000"):
        reference.check("clean", n=10_000)
    with pytest.raises(ConfigError, match="at least 2 images"):
        reference.check(load_dataset("digits").split("val")[0][:1])
    with pytest.raises(ConfigError, match="reference_n"):
        fit_reference("latest", config=ReferenceConfig(reference_n=100_000), device="cpu", registry=registry)


def test_reference_from_embeddings_checks_embeddings_only() -> None:
    rng = np.random.default_rng(0)

    def embeddings(n: int, shift: float) -> Embeddings:
        features = rng.normal(shift, 1.0, (n, 16)).astype(np.float32)
        probs = np.full((n, 4), 0.25, np.float32)
        return Embeddings(features=features, probs=probs, preds=np.zeros(n, np.int64), labels=None,
                          indices=np.arange(n))

    config = ReferenceConfig(detectors=("mmd", "ks"))
    reference = FittedReference.from_embeddings(embeddings(100, 0.0), config)
    assert reference.check(embeddings(60, 0.0)).decision.drift is False
    shifted = reference.check(embeddings(60, 1.0))
    assert shifted.decision.drift is True and set(shifted.decision.flagged) == {"mmd", "ks"}
    with pytest.raises(ConfigError, match="built from embeddings"):
        reference.check("clean")


def test_bonferroni_rule() -> None:
    from zeal_core.drift import DriftResult

    def result(name: str, p: float) -> DriftResult:
        return DriftResult(detector=name, statistic=0.0, p_value=p, is_drift=p < 0.05, effect_size=0.0,
                           runtime_s=0.0)

    decision = bonferroni([result("a", 0.03), result("b", 0.5)], alpha=0.05)
    assert decision.drift is False and decision.threshold == 0.025 and decision.adjusted_p_value == 0.06
    assert bonferroni([result("a", 0.02), result("b", 0.5)], alpha=0.05).flagged == ("a",)
    assert "Bonferroni" in decision.rule
    with pytest.raises(ConfigError):
        bonferroni([], alpha=0.05)


def test_exactly_the_affected_images_move(reference: FittedReference) -> None:
    """A spec at fraction 0.5 corrupts half the sample; the other half are the very same clean images."""
    clean = reference.check("clean", n=16, seed=2, parts=["detectors"])
    noisy = reference.check("gaussian_noise:3@0.5", n=16, seed=2, parts=["detectors"])
    assert np.array_equal(clean.sample.indices, noisy.sample.indices)  # same seed: same images
    assert int(noisy.sample.affected.sum()) == 8 and not clean.sample.affected.any()
    moved = np.abs(noisy.sample.features - clean.sample.features).max(1) > 1e-4
    assert np.array_equal(moved, noisy.sample.affected)
    _, val_labels = reference.source.dataset.split("val")
    assert np.array_equal(clean.sample.labels, val_labels.numpy()[clean.sample.indices])
    with pytest.raises(ConfigError):
        reference.check("not_a_corruption:3", n=4)


def test_scatter_frame_rows_for_reference_and_sample(reference: FittedReference) -> None:
    from zeal_core.reference import scatter_frame

    report = reference.check("gaussian_noise:3@0.5", n=30, seed=4)
    frame = scatter_frame(report, reference)
    assert {"x", "y", "label", "prediction", "domain", "row", "index"} <= set(frame.columns)
    assert len(frame) == 150 and (frame["domain"] == "reference").sum() == 120
    tested = frame[frame["domain"] != "reference"]
    assert sorted(tested["domain"].unique()) == ["corrupted", "sample, clean"]
    assert (tested["domain"] == "corrupted").sum() == 15
    assert tested["index"].tolist() == list(report.sample.indices)
    assert set(frame["label"]) <= set(reference.class_names)
    unlabelled = reference.check(report.sample.without_labels())
    uploads = scatter_frame(unlabelled, reference, sample_domain="upload")
    assert set(uploads[uploads["domain"] != "reference"]["label"]) == {"unknown"}
    with pytest.raises(ConfigError, match="no projection"):
        scatter_frame(reference.check("clean", n=10, parts=["detectors"]), reference)


def test_label_shift_puts_pm_atc_first() -> None:
    """The estimate shown first follows the diagnosis: pm-atc under a label shift, else the given order."""
    from types import SimpleNamespace

    from zeal_core.reference.labelfree import preferred_order

    estimates = [SimpleNamespace(estimator=name) for name in ("shift-calibrated", "pm-atc", "atc-mc")]
    shifted = preferred_order(estimates, SimpleNamespace(verdict="label shift"))
    assert [item.estimator for item in shifted] == ["pm-atc", "shift-calibrated", "atc-mc"]
    for diagnosis in (None, SimpleNamespace(verdict="covariate shift")):
        assert [item.estimator for item in preferred_order(estimates, diagnosis)] == \
            ["shift-calibrated", "pm-atc", "atc-mc"]
