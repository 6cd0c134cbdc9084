"""Label-free accuracy estimators: registry, contract, no label access, calibration, ATC, splits, intervals"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.embed import Embeddings, part_positions
from zeal_core.errors import ConfigError
from zeal_core.estimate import (
    AccuracyEstimator,
    create_estimator,
    estimator_info,
    expected_calibration_error,
    fit_temperature,
    leave_one_corruption_out,
    list_estimators,
)
from zeal_core.estimate.atc import atc_threshold
from zeal_core.estimate.calibration import softmax
from zeal_core.estimate.prior_matched import match_prior, target_shares
from zeal_core.shifts import ShiftedSet

CLASSES = 5
FAST = {"bootstrap": 100}  # fewer replicates keep every test quick; intervals are still well defined
CORE = ("average-confidence", "atc-mc", "atc-ne", "doc", "pm-atc", "shift-calibrated")  # the issue's + ours


def synthetic(n: int, seed: int, scale: float = 3.0, collapse: float = 0.0,
              labels: bool = True) -> Embeddings:
    """A toy classifier that is calibrated by construction: each label is drawn from the model's softmax.

    ``scale`` sets how peaked the logits are (lower: less accurate and less sure). ``collapse`` is the
    share of items whose logits are then pushed towards class 0 with high confidence while their labels
    stay as drawn: a model that is confidently wrong on a whole block of images, whose features also
    moved away from the rest.
    """
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n, CLASSES))
    cumulative = softmax(logits).cumsum(axis=1)
    truth = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), CLASSES - 1)
    forced = rng.random(n) < collapse
    logits[forced, 0] += 8.0
    probs = softmax(logits).astype(np.float32)
    features = rng.normal(size=(n, 4)) + 2.0 * forced[:, None]  # the corrupted block also looks different
    return Embeddings(features=features.astype(np.float32), probs=probs,
                      preds=probs.argmax(1), labels=truth if labels else None, indices=np.arange(n),
                      logits=logits.astype(np.float32))


def stable(result: Any) -> dict[str, Any]:
    """An estimate as a dict without its wall-clock time (which differs between calls)."""
    out = result.to_dict()
    out["details"].pop("runtime_s")
    return out


def fitted(name: str, reference: Embeddings | None = None, bank: tuple[ShiftedSet, ...] | None = None,
           **options: Any) -> AccuracyEstimator:
    estimator = create_estimator(name, **{**FAST, **options})
    if estimator_info(name).needs_bank:
        bank = bank if bank is not None else toy_bank()
    return estimator.fit(reference if reference is not None else synthetic(600, 0), bank)


def toy_bank() -> tuple[ShiftedSet, ...]:
    """Synthetic shifts of the reference: three kinds x two severities (accuracy falls with severity)."""
    return tuple(ShiftedSet(spec=DriftSpec(steps=((kind, float(severity)),)),
                            embeddings=synthetic(300, 10 + index, scale=3.0 - 0.5 * severity,
                                                 collapse=0.1 * severity if kind == "fog" else 0.0))
                 for index, (kind, severity) in enumerate(
                     (kind, severity) for kind in ("gaussian_noise", "fog", "contrast")
                     for severity in (1, 3)))


# Registry -------------------------------------------------------------------------------------------------


def test_registry_lists_the_estimators_and_errors_name_the_choices() -> None:
    names = list_estimators()
    assert set(CORE) <= set(names)
    with pytest.raises(ConfigError, match=r"unknown estimator 'nope'.*atc-mc.*pm-atc"):
        create_estimator("nope")
    with pytest.raises(ConfigError, match="unknown estimator"):
        estimator_info("nope")
    with pytest.raises(ConfigError, match=r"unknown option 'alpha'.*level"):
        create_estimator("atc-mc", alpha=0.1)
    with pytest.raises(ConfigError, match="level"):
        create_estimator("doc", level=1.5)
    with pytest.raises(ConfigError, match="strength"):
        create_estimator("pm-atc", strength=-1)
    info = estimator_info("pm-atc")
    assert info.description and info.needs_bank is False and info.views == ()


# Contract: every registered estimator ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list_estimators())
def test_estimator_contract(name: str) -> None:
    estimator = create_estimator(name, **FAST)
    with pytest.raises(ConfigError, match="not fitted"):
        estimator.estimate(synthetic(50, 1))
    with pytest.raises(ConfigError, match="no labels"):
        estimator.fit(synthetic(100, 0, labels=False))
    if estimator_info(name).needs_bank:
        with pytest.raises(ConfigError, match="bank"):
            estimator.fit(synthetic(100, 0))
    estimator = fitted(name)
    sample = synthetic(200, 2, scale=2.0, labels=False)  # no labels at all: estimators never need them
    result = estimator.estimate(sample)
    assert result.estimator == name and result.n == 200 and result.level == pytest.approx(0.9)
    assert 0.0 <= result.low <= result.accuracy <= result.high <= 1.0
    assert json.loads(json.dumps(result.to_dict()))["accuracy"] == pytest.approx(result.accuracy)
    assert "temperature" in result.details["fit"] and "ece_after" in result.details["fit"]
    assert stable(estimator.estimate(sample)) == stable(estimator.estimate(sample))  # seeded: same every call
    with pytest.raises(ConfigError, match="classes"):
        estimator.estimate(Embeddings(features=np.zeros((3, 4)), probs=np.full((3, 3), 1 / 3),
                                      preds=np.zeros(3, np.int64), labels=None, indices=np.arange(3)))


@pytest.mark.parametrize("name", list_estimators())
def test_sample_labels_change_nothing(name: str) -> None:
    """The base class strips labels: with true labels, wrong labels or none, the estimate is identical."""
    estimator = fitted(name)
    sample = synthetic(150, 3, scale=1.5)
    wrong = Embeddings(**{**sample.__dict__, "labels": (sample.labels + 1) % CLASSES})
    results = [stable(estimator.estimate(s)) for s in (sample, wrong, sample.without_labels())]
    assert results[0] == results[1] == results[2]


def test_base_class_hands_subclasses_no_labels() -> None:
    seen: list[Embeddings] = []

    class Spy(AccuracyEstimator):
        name = "spy"
        description = "records what it is given"

        def _fit(self, reference: Embeddings, bank: list[ShiftedSet]) -> None:
            assert reference.labels is not None  # the reference is labelled: that is what fitting needs

        def _estimate(self, sample: Embeddings) -> tuple[float, float, float, dict[str, Any]]:
            seen.append(sample)
            return 0.5, 0.4, 0.6, {}

    Spy().fit(synthetic(100, 0)).estimate(synthetic(40, 1))
    assert seen and seen[0].labels is None and len(seen[0]) == 40


# Calibration ----------------------------------------------------------------------------------------------


def test_temperature_scaling_lowers_ece_of_an_overconfident_model() -> None:
    reference = synthetic(2000, 4)
    labels = reference.labels
    logits = reference.logits.astype(np.float64)
    temperature = fit_temperature(logits, labels)
    overconfident = 4.0 * logits  # the same model, logits scaled up: far too sure of itself
    t_over = fit_temperature(overconfident, labels)
    assert t_over == pytest.approx(4.0 * temperature, rel=0.02)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, t_over), labels)
    assert before > 0.08 and after < before / 3
    assert softmax(overconfident, t_over).argmax(1).tolist() == softmax(overconfident).argmax(1).tolist()
    with pytest.raises(ConfigError, match="classes the model does not predict"):
        fit_temperature(logits[:5], np.array([0, 1, 2, 3, 9]))


def test_fitted_estimator_reports_ece_before_and_after() -> None:
    reference = synthetic(1000, 15)
    overconfident = Embeddings(**{**reference.__dict__, "logits": 3.0 * reference.logits})
    details = fitted("average-confidence", overconfident).fit_details
    assert details["ece_after"] < details["ece_before"] / 2 and details["temperature"] > 2


# What the estimators estimate -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["atc-mc", "atc-ne", "pm-atc"])
def test_atc_threshold_reproduces_the_reference_accuracy_on_the_reference(name: str) -> None:
    reference = synthetic(500, 5)
    estimator = fitted(name, reference)
    assert estimator.estimate(reference).accuracy == pytest.approx(reference.accuracy, abs=1 / 500 + 1e-12)


def test_atc_threshold_edges() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert (scores > atc_threshold(scores, 0.5)).sum() == 2
    assert (scores > atc_threshold(scores, 0.0)).sum() == 0
    assert (scores > atc_threshold(scores, 1.0)).sum() == 4


@pytest.mark.parametrize("name", CORE)
def test_clean_held_out_estimate_is_close(name: str) -> None:
    sample = synthetic(2000, 6)
    estimate = fitted(name, synthetic(2000, 7)).estimate(sample)
    assert abs(estimate.accuracy - sample.accuracy) < 0.03


def test_prior_matching_catches_a_confidently_wrong_block() -> None:
    """A third of the images forced to class 0 at high confidence: ATC misses it, prior matching does not."""
    reference = synthetic(1000, 8)
    sample = synthetic(1000, 9, collapse=0.35)
    truth = sample.accuracy
    atc = fitted("atc-mc", reference).estimate(sample)
    matched = fitted("pm-atc", reference).estimate(sample)
    assert atc.accuracy - truth > 0.15  # ATC is fooled by the confident block
    assert abs(matched.accuracy - truth) < min(0.08, (atc.accuracy - truth) / 3)
    assert matched.details["class_shift"] > 0.2 and matched.details["matched"] < -0.1


def test_match_prior_hits_its_target_shares() -> None:
    probs = softmax(synthetic(300, 10, collapse=0.5).logits)
    shares = np.full(CLASSES, 1 / CLASSES)
    target = target_shares(probs.mean(0)[None], shares, np.full(CLASSES, 0.1), 300, 300, strength=1.0)
    shift = match_prior(probs, np.ones((1, 300)), target)
    weights = np.exp(shift[0] - shift[0].max())
    matched = probs * weights
    matched /= matched.sum(1, keepdims=True)
    np.testing.assert_allclose(matched.mean(0), target[0], atol=2e-4)
    assert target[0, 0] < probs.mean(0)[0]  # the over-predicted class is pulled down, not all the way


@pytest.fixture(scope="module")
def digits_views() -> dict[str, Any]:
    """A tiny linear classifier on 8 x 8 digit pixels (trained in about a second) and its view of the
    validation split's reference half (clean) and sample half (clean and under heavy fog)."""
    from zeal_core.data import load_dataset

    images, labels = load_dataset("digits").split("train")
    val_images, val_labels = load_dataset("digits").split("val")

    def pixels(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(batch.float()[:, :1] / 255.0, 4).flatten(1)

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs = pixels(images)
    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()

    def view(positions: np.ndarray, spec: str) -> Embeddings:
        batch = val_images[torch.from_numpy(np.array(positions))]
        if spec != "clean":
            batch = DriftSpec.parse(spec).apply(batch, seed=0)
        with torch.no_grad():
            features = pixels(batch)
            logits = model(features).numpy()
        probs = softmax(logits).astype(np.float32)
        return Embeddings(features=features.numpy(), probs=probs, preds=probs.argmax(1),
                          labels=val_labels[np.array(positions)].numpy(), indices=positions, logits=logits)

    reference = part_positions(len(val_labels), "reference")
    sample = part_positions(len(val_labels), "sample")
    # a small bank of the reference images, without fog: the fog test is on a corruption it never saw
    bank = tuple(ShiftedSet(spec=DriftSpec.parse(text), embeddings=view(reference, text))
                 for text in ("gaussian_noise:3", "gaussian_noise:5", "contrast:3", "contrast:5",
                              "brightness:5", "pixelate:5"))
    return {"reference": view(reference, "clean"), "clean": view(sample, "clean"),
            "fog": view(sample, "fog:5"), "bank": bank}


@pytest.mark.parametrize("name", CORE)
def test_heavy_corruption_lowers_the_estimate(name: str, digits_views: dict[str, Any]) -> None:
    estimator = fitted(name, digits_views["reference"], digits_views["bank"])
    clean, fog = digits_views["clean"], digits_views["fog"]
    assert fog.accuracy < clean.accuracy - 0.4  # the fog really hurts this model
    clean_estimate = estimator.estimate(clean).accuracy
    fog_estimate = estimator.estimate(fog).accuracy
    assert fog_estimate < clean_estimate - 0.1
    assert abs(clean_estimate - clean.accuracy) < 0.05


def test_prior_matching_is_closest_under_the_heavy_corruption(digits_views: dict[str, Any]) -> None:
    """Fog confuses the linear model into a few classes and moves its inputs: pm-atc sees both. (The
    shift-calibrated fit on this six-shift bank does not transfer to fog: it needs a fuller bank.)"""
    fog = digits_views["fog"]
    errors = {name: abs(fitted(name, digits_views["reference"], digits_views["bank"]).estimate(fog).accuracy
                        - fog.accuracy) for name in CORE}
    assert min(errors, key=errors.get) == "pm-atc"
    assert errors["pm-atc"] < errors["atc-mc"] / 2


# Intervals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE)
def test_intervals_contain_the_estimate_and_narrow_with_n(name: str) -> None:
    estimator = fitted(name, synthetic(2000, 11))
    small = estimator.estimate(synthetic(50, 12, scale=2.0, labels=False))
    large = estimator.estimate(synthetic(1000, 12, scale=2.0, labels=False))
    for result in (small, large):
        assert result.low <= result.accuracy <= result.high
    assert large.high - large.low < small.high - small.low
    assert small.high - small.low > 0.02  # 50 items cannot pin the accuracy down to 2 points


def test_an_interval_usually_holds_the_clean_stream_accuracy() -> None:
    reference = synthetic(1000, 13)
    estimator = fitted("atc-mc", reference, bootstrap=200)
    stream = synthetic(20000, 14)
    held = 0
    for trial in range(30):
        rows = np.random.default_rng(trial).choice(len(stream), 100, replace=False)
        result = estimator.estimate(stream.subset(rows))
        held += result.low <= stream.accuracy <= result.high
    assert held >= 22  # 90 % intervals: at least ~73 % of 30 trials (binomial slack)


def test_bank_fitted_interval_adds_the_fit_error() -> None:
    estimator = fitted("shift-calibrated", synthetic(600, 16), folds=3)
    result = estimator.estimate(synthetic(200, 17, scale=2.0))
    sampling_low, sampling_high = result.details["sampling_interval"]
    assert estimator.fit_spread > 0 and result.details["fit_spread"] == estimator.fit_spread
    assert result.low <= sampling_low <= result.accuracy <= sampling_high <= result.high
    assert result.high - result.low > sampling_high - sampling_low


# Leave one corruption out ---------------------------------------------------------------------------------


def test_leave_one_corruption_out_never_scores_a_fitted_corruption() -> None:
    bank = toy_bank()
    folds = leave_one_corruption_out(bank)
    assert [fold.held_out for fold in folds] == ["gaussian_noise", "fog", "contrast"]
    for fold in folds:
        fitted_kinds = {shifted.corruption for shifted in fold.fit}
        assert fold.held_out not in fitted_kinds
        assert fitted_kinds == {"gaussian_noise", "fog", "contrast"} - {fold.held_out}
        assert len(fold.fit) == 4  # two severities of each of the two other kinds
    new_kind = leave_one_corruption_out(bank, ["rotation"])[0]
    assert new_kind.held_out == "rotation" and len(new_kind.fit) == len(bank)
    with pytest.raises(ConfigError, match="at least two corruptions"):
        leave_one_corruption_out(bank[:2])
