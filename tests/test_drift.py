"""Batch drift detectors: registry, paired no-drift/drift cases, calibration, frouros agreement, bad input."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from scipy import stats

from zeal_core.drift import (
    DriftResult,
    create_detector,
    detector_info,
    list_detectors,
)
from zeal_core.drift.mmd import mmd2_unbiased, permutation_mmd2, rbf_kernel_matrix, split_mmd2
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.reference import FittedReference, ReferenceConfig

FEATURE_DIMS = 48  # synthetic "embedding" width (kept small so every test is quick)
DRIFT_SHIFT = 1.5  # mean shift per dim of the "drifted" synthetic features (feature std is ~3-5)
FAST_OPTIONS = {"mmd": {"num_permutations": 200}}  # fewer permutations: enough resolution for alpha 0.05


def gaussian_features(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features (8 latent factors + noise), optionally mean-shifted in every dim."""
    basis = np.random.default_rng(1234).standard_normal((8, FEATURE_DIMS))  # fixed: same distribution
    latent = rng.standard_normal((n, 8)) * np.linspace(2.0, 0.5, 8)
    return latent @ basis + 0.5 * rng.standard_normal((n, FEATURE_DIMS)) + shift


def dirichlet_probs(rng: np.random.Generator, n: int, drifted: bool = False) -> np.ndarray:
    """Softmax-like outputs over 10 classes; drift moves confidence from class 0 to class 1."""
    concentration = np.ones(10)
    concentration[1 if drifted else 0] = 6.0
    return rng.dirichlet(concentration, size=n)


def make_pair(name: str, seed: int, drifted: bool, n_reference: int = 120,
              n_sample: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if detector_info(name).input_kind == "probs":
        return dirichlet_probs(rng, n_reference), dirichlet_probs(rng, n_sample, drifted)
    shift = DRIFT_SHIFT if drifted else 0.0
    return gaussian_features(rng, n_reference), gaussian_features(rng, n_sample, shift)


def test_registry_lists_the_required_detectors() -> None:
    names = list_detectors()
    assert {"mmd", "ks", "cvm", "bbsd", "c2st"} <= set(names)
    for name in names:
        info = detector_info(name)
        assert info.name == name and info.input_kind in ("features", "probs") and info.description
        assert create_detector(name).input_kind == info.input_kind
    assert detector_info("bbsd").input_kind == "probs"


def test_unknown_names_and_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="mmd"):  # the message lists the known names
        create_detector("nope")
    with pytest.raises(ConfigError, match="unknown detector"):
        detector_info("nope")
    with pytest.raises(ConfigError, match="invalid option"):
        create_detector("ks", not_an_option=1)
    with pytest.raises(ConfigError, match="alpha"):
        create_detector("mmd", alpha=1.5)
    with pytest.raises(ConfigError, match="num_permutations"):
        create_detector("mmd", num_permutations=0)
    with pytest.raises(ConfigError, match="bandwidth"):
        create_detector("mmd", bandwidth=-1.0)


@pytest.mark.parametrize("name", list_detectors())
def test_paired_no_drift_and_drift(name: str) -> None:
    """Across 8 seeds: clean-vs-clean rarely flags drift, a clear shift is always found."""
    false_alarms = 0
    for seed in range(8):
        reference, clean = make_pair(name, seed, drifted=False)
        detector = create_detector(name, seed=seed, **FAST_OPTIONS.get(name, {})).fit(reference)
        clean_result = detector.test(clean)
        false_alarms += clean_result.is_drift
        _, drifted = make_pair(name, seed, drifted=True)
        drift_result = detector.test(drifted)
        assert drift_result.is_drift, f"{name} missed a clear shift (seed {seed}): {drift_result}"
        assert drift_result.p_value < clean_result.p_value
        assert drift_result.effect_size > clean_result.effect_size
        assert 0.0 < clean_result.p_value <= 1.0 and clean_result.runtime_s >= 0.0
    assert false_alarms <= 2, f"{name}: {false_alarms} of 8 clean samples flagged"


@pytest.mark.parametrize("name", list_detectors())
def test_reference_is_never_changed(name: str) -> None:
    reference, sample = make_pair(name, 3, drifted=True)
    original = reference.copy()
    detector = create_detector(name, **FAST_OPTIONS.get(name, {})).fit(reference)
    reference[:] = 0.0  # the caller reuses its buffer: the detector kept its own copy
    first = detector.test(sample)
    assert np.array_equal(detector.reference, original)
    assert not detector.reference.flags.writeable
    with pytest.raises(ValueError):
        detector.reference[0, 0] = 1.0
    second = detector.test(sample)
    assert np.array_equal(detector.reference, original)
    assert (first.statistic, first.p_value) == (second.statistic, second.p_value)  # seeded: repeatable


@pytest.mark.parametrize("name", list_detectors())
def test_bad_inputs_raise_config_error(name: str) -> None:
    reference, sample = make_pair(name, 0, drifted=False)
    detector = create_detector(name, **FAST_OPTIONS.get(name, {}))
    with pytest.raises(ConfigError, match="not fitted"):
        detector.test(sample)
    with pytest.raises(ConfigError, match="2-D"):
        detector.fit(reference[:, 0])
    with pytest.raises(ConfigError, match="at least 2"):
        detector.fit(reference[:1])
    with pytest.raises(ConfigError, match="at least 2"):
        detector.fit(reference[:0])
    poisoned = reference.copy()
    poisoned[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        detector.fit(poisoned)
    detector.fit(reference)
    with pytest.raises(ConfigError, match="dims"):
        detector.test(sample[:, :-1])
    infinite = sample.copy()
    infinite[0, 0] = np.inf
    with pytest.raises(ConfigError, match="NaN or inf"):
        detector.test(infinite)
    with pytest.raises(ConfigError, match="at least 2"):
        detector.test(sample[:1])


def test_result_to_dict_is_json_ready() -> None:
    reference, sample = make_pair("c2st", 0, drifted=True)
    result = create_detector("c2st").fit(reference).test(sample)
    assert isinstance(result, DriftResult)
    encoded = json.loads(json.dumps(result.to_dict()))
    assert encoded["detector"] == "c2st" and encoded["is_drift"] is True
    assert set(encoded) == {"detector", "statistic", "p_value", "is_drift", "effect_size", "runtime_s",
                            "details"}
    with pytest.raises(AttributeError):
        result.p_value = 0.5  # frozen


def test_mmd_null_p_values_are_uniform() -> None:
    """200 clean-vs-clean tests: p-values pass a KS test for uniformity at 0.01, and are never 0."""
    rng = np.random.default_rng(7)
    p_values = []
    for seed in range(200):
        reference = rng.standard_normal((20, 4))
        sample = rng.standard_normal((15, 4))
        result = create_detector("mmd", num_permutations=100, seed=seed).fit(reference).test(sample)
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    assert p_values.min() >= 1 / 101
    # p = (b + 1) / (B + 1) is a multiple of 1/101
    assert np.allclose(p_values * 101, np.round(p_values * 101))
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_mmd_p_value_is_never_zero_and_counts_exceedances() -> None:
    rng = np.random.default_rng(0)
    result = create_detector("mmd", num_permutations=50).fit(rng.standard_normal((30, 3))).test(
        rng.standard_normal((30, 3)) + 3.0)
    assert result.p_value == pytest.approx(1 / 51)
    assert result.details["permutations_exceeding"] == 0


def test_mmd_vectorised_statistics_match_direct_computation() -> None:
    """The indicator-matrix form equals the unbiased MMD² recomputed split by split."""
    rng = np.random.default_rng(2)
    pooled = torch.tensor(rng.standard_normal((25, 5)), dtype=torch.float32)
    kernel = rbf_kernel_matrix(pooled, sigma=2.0)
    observed, permuted = permutation_mmd2(kernel, 10, num_permutations=30, seed=4)
    assert float(observed) == pytest.approx(mmd2_unbiased(kernel, 10), abs=1e-6)
    assert permuted.shape == (30,) and torch.isfinite(permuted).all() and float(permuted.std()) > 0
    splits = [rng.permutation(25) for _ in range(6)]
    indicators = torch.zeros(6, 25)
    for row, order in enumerate(splits):
        indicators[row, torch.from_numpy(order[:10])] = 1.0
    vectorised = split_mmd2(kernel, indicators)
    for row, order in enumerate(splits):
        reordered = kernel[torch.from_numpy(order)][:, torch.from_numpy(order)]
        assert float(vectorised[row]) == pytest.approx(mmd2_unbiased(reordered, 10), abs=1e-6)


def test_mmd_agrees_with_frouros() -> None:
    """Same kernel bandwidth: statistic equal to ~1e-6, permutation p-values within Monte-Carlo error."""
    from frouros.callbacks import PermutationTestDistanceBased
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    rng = np.random.default_rng(11)
    reference = rng.standard_normal((40, 5))
    sample = rng.standard_normal((30, 5)) + 0.3  # a weak shift: p-value in the interesting range
    permutations = 300
    ours = create_detector("mmd", num_permutations=permutations, seed=1).fit(reference).test(sample)
    sigma = ours.details["sigma"]
    frouros_detector = MMD(kernel=partial(rbf_kernel, sigma=sigma), callbacks=[PermutationTestDistanceBased(
        num_permutations=permutations, random_state=5, num_jobs=1, method="conservative")])
    frouros_detector.fit(X=reference)
    distance, logs = frouros_detector.compare(X=sample)
    assert ours.statistic == pytest.approx(distance.distance, rel=1e-5, abs=1e-7)
    theirs = logs["PermutationTestDistanceBased"]["p_value"]
    p_mean = (ours.p_value + theirs) / 2
    # Two independent Monte-Carlo estimates: difference within 4 standard errors (plus resolution).
    tolerance = 4 * np.sqrt(2 * p_mean * (1 - p_mean) / permutations) + 2 / permutations
    assert abs(ours.p_value - theirs) <= tolerance, (ours.p_value, theirs)
    assert 0.0 < theirs < 0.5  # the case really exercises the tail


def test_mmd_fixed_bandwidth_and_median_bandwidth() -> None:
    rng = np.random.default_rng(5)
    reference, sample = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    fixed = create_detector("mmd", bandwidth=1.5, num_permutations=50).fit(reference).test(sample)
    assert fixed.details["sigma"] == 1.5
    median = create_detector("mmd", num_permutations=50).fit(reference).test(sample)
    # Median distance between standard normal points in 4-D is about sqrt(2 * 4) ~ 2.8
    assert 2.0 < median.details["sigma"] < 3.6


def test_c2st_ranks_the_shifted_items_first() -> None:
    rng = np.random.default_rng(4)
    reference = gaussian_features(rng, 200)
    sample = gaussian_features(rng, 80)
    shifted = np.arange(0, 80, 3)  # 27 of the 80 items come from a far-away shift
    sample[shifted] += 3.0
    result = create_detector("c2st", top_k=20).fit(reference).test(sample)
    assert result.is_drift and result.details["auc"] > 0.5 and result.details["cv_auc"] > 0.5
    top = set(result.details["most_drifted"])
    assert len(top) == 20 and len(top & set(shifted.tolist())) >= 17


def test_univariate_details_name_the_drifted_dimension() -> None:
    rng = np.random.default_rng(9)
    reference = rng.standard_normal((150, 6))
    sample = rng.standard_normal((100, 6))
    sample[:, 4] += 1.0
    result = create_detector("ks", pca_dims=None).fit(reference).test(sample)
    assert result.is_drift and result.details["most_drifted_dim"] == 4
    assert result.details["dims_tested"] == 6
    assert result.p_value == pytest.approx(min(1.0, 6 * min(result.details["p_values"])), rel=1e-3)


def test_reference_picks_features_or_probs_per_detector() -> None:
    rng = np.random.default_rng(0)

    def embeddings(n: int, drifted: bool, offset: int) -> Embeddings:
        probs = dirichlet_probs(rng, n, drifted).astype(np.float32)
        features = gaussian_features(rng, n, DRIFT_SHIFT if drifted else 0.0).astype(np.float32)
        return Embeddings(features=features,
                          probs=probs, preds=probs.argmax(1), labels=None,
                          indices=np.arange(offset, offset + n))

    reference, sample = embeddings(100, False, 0), embeddings(60, True, 1000)
    fitted = FittedReference.from_embeddings(reference, ReferenceConfig(detector_options=FAST_OPTIONS))
    results = fitted.check(sample, parts=["detectors"]).results
    assert [r.detector for r in results] == list_detectors()
    assert all(r.is_drift for r in results)
    c2st = next(r for r in results if r.detector == "c2st")
    assert all(1000 <= index < 1060 for index in c2st.details["most_drifted_indices"])
    only = FittedReference.from_embeddings(reference, ReferenceConfig(detectors=("bbsd",)))
    results = only.check(reference, parts=["detectors"]).results
    assert len(results) == 1 and not results[0].is_drift
    with pytest.raises(ConfigError, match="unknown detector"):
        FittedReference.from_embeddings(reference, ReferenceConfig(detectors=("typo",)))


def test_c2st_without_ranking_gives_the_same_test() -> None:
    rng = np.random.default_rng(5)
    reference, sample = rng.normal(size=(80, 12)), rng.normal(0.6, 1.0, size=(60, 12))
    ranked = create_detector("c2st").fit(reference).test(sample)
    plain = create_detector("c2st", rank=False).fit(reference).test(sample)
    assert plain.p_value == ranked.p_value and plain.statistic == ranked.statistic
    assert "most_drifted" in ranked.details and "most_drifted" not in plain.details
