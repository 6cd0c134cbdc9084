"""mmd-fuse and mmd-agg: paired no-drift/drift cases, exactness, agreement with a slow direct implementation,
calibration, the shared permutation engine, and the Failing Loudly trial hook."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from zeal_core.drift import create_detector, detector_info, list_detectors
from zeal_core.drift import kernels as kernel_module
from zeal_core.drift.kernels import (
    PermutationSplits,
    PooledDistances,
    draw_split_positions,
    value_hashed_rows,
)
from zeal_core.errors import ConfigError

NEW = ("mmd-fuse", "mmd-agg")
VARIANCE_DIMS = 8  # dims of the synthetic "variance shift" whose spread shrinks
VARIANCE_SCALE = 0.5  # their standard deviation in the sample (1 in the reference)


def variance_pair(seed: int, shifted: bool, n: int = 100, dims: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Standard Gaussian reference and sample; "shifted" shrinks the spread of a few dims of the sample.

    The median-heuristic bandwidth (about sqrt(2 · 32) = 8) is far wider than this change, so median-bandwidth
    MMD often misses it at n = 100, while the smaller bandwidths of the collections see it.
    """
    rng = np.random.default_rng(seed)
    reference, sample = rng.standard_normal((n, dims)), rng.standard_normal((n, dims))
    if shifted:
        sample[:, :VARIANCE_DIMS] *= VARIANCE_SCALE
    return reference, sample


def test_registered_as_feature_detectors_with_checked_options() -> None:
    names = list_detectors()
    for name in NEW:
        assert name in names and detector_info(name).input_kind == "features"
        assert detector_info(name).description
        with pytest.raises(ConfigError, match="kernels"):
            create_detector(name, kernels="rbf")
        with pytest.raises(ConfigError, match="kernels"):
            create_detector(name, kernels=("gaussian", "gaussian"))
        with pytest.raises(ConfigError, match="num_bandwidths"):
            create_detector(name, num_bandwidths=0)
        with pytest.raises(ConfigError, match="num_permutations"):
            create_detector(name, num_permutations=0)
        assert create_detector(name, kernels="laplace").kernels == ("laplace",)
    with pytest.raises(ConfigError, match="lambda_multiplier"):
        create_detector("mmd-fuse", lambda_multiplier=-1.0)


@pytest.mark.parametrize("name", NEW)
def test_paired_variance_shift_that_median_mmd_misses(name: str) -> None:
    """8 seeds: clean samples rarely flagged; the variance shift found, where median mmd mostly is not."""
    found = mmd_found = false_alarms = 0
    for seed in range(8):
        reference, clean = variance_pair(seed, shifted=False)
        _, drifted = variance_pair(seed, shifted=True)
        detector = create_detector(name, seed=seed, num_permutations=200).fit(reference)
        clean_result, drift_result = detector.test(clean), detector.test(drifted)
        false_alarms += clean_result.is_drift
        found += drift_result.is_drift
        assert drift_result.p_value < clean_result.p_value
        assert 0.0 < clean_result.p_value <= 1.0 and 0.0 < drift_result.p_value <= 1.0
        mmd = create_detector("mmd", seed=seed, num_permutations=200).fit(reference)
        mmd_found += mmd.test(drifted).is_drift
    assert found >= 7, f"{name} found the variance shift in {found} of 8 samples"
    assert mmd_found <= 5, f"median mmd found it in {mmd_found} of 8: the case no longer separates them"
    assert false_alarms <= 2


@pytest.mark.parametrize("name", NEW)
def test_p_value_never_zero_and_reference_unchanged(name: str) -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((30, 3))
    original = reference.copy()
    detector = create_detector(name, num_permutations=50).fit(reference)
    reference[:] = 0.0  # the caller reuses its buffer: the detector kept its own copy
    far = detector.test(rng.standard_normal((25, 3)) + 4.0)
    assert far.p_value == pytest.approx(1 / 51) and far.is_drift
    assert np.array_equal(detector.reference, original) and not detector.reference.flags.writeable
    again = detector.test(rng.standard_normal((25, 3)) + 4.0)
    assert again.p_value == pytest.approx(1 / 51)
    assert np.array_equal(detector.reference, original)


@pytest.mark.parametrize("name", NEW)
def test_deterministic_per_seed(name: str) -> None:
    reference, sample = variance_pair(3, shifted=True, n=40)
    results = [create_detector(name, seed=seed, num_permutations=100).fit(reference).test(sample)
               for seed in (7, 7, 8)]
    assert results[0].to_dict()["details"] == results[1].to_dict()["details"]
    assert (results[0].statistic, results[0].p_value) == (results[1].statistic, results[1].p_value)
    assert results[0].details["mmd2"] == results[2].details["mmd2"]  # the observed split is seed-free


@pytest.mark.parametrize("name", NEW)
def test_one_median_kernel_is_exactly_mmd(name: str) -> None:
    """One Gaussian kernel at the median bandwidth: both reduce to mmd (same permutations, same p-value)."""
    rng = np.random.default_rng(1)
    reference, sample = rng.standard_normal((60, 8)), rng.standard_normal((40, 8)) + 0.3
    mmd = create_detector("mmd", num_permutations=300, seed=3).fit(reference).test(sample)
    single = create_detector(name, num_permutations=300, seed=3, kernels="gaussian",
                             num_bandwidths=1).fit(reference).test(sample)
    assert single.p_value == mmd.p_value
    assert single.details["bandwidths"][0] == pytest.approx(mmd.details["sigma"], rel=1e-6)
    assert single.details["mmd2"][0] == pytest.approx(mmd.statistic, rel=1e-5)


# A slow, direct implementation (numpy, loops over kernels and splits) of both statistics -------------------


def direct_bandwidths(pooled: np.ndarray, count: int) -> list[float]:
    distances = np.sqrt(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1))
    pairs = np.sort(distances[np.triu_indices(len(pooled), k=1)])
    low = pairs[math.floor(0.05 * (len(pairs) - 1))] * 0.25
    high = pairs[math.floor(0.95 * (len(pairs) - 1))] * 2.0
    return [low * (high / low) ** (step / (count - 1)) for step in range(count)]


def direct_mmd2(kernel: np.ndarray, first: list[int], second: list[int]) -> float:
    """Unbiased MMD² by explicit sums over index pairs."""
    xx = sum(kernel[i, j] for i in first for j in first if i != j) / (len(first) * (len(first) - 1))
    yy = sum(kernel[i, j] for i in second for j in second if i != j) / (len(second) * (len(second) - 1))
    xy = sum(kernel[i, j] for i in first for j in second) / (len(first) * len(second))
    return xx + yy - 2.0 * xy


def direct_table(pooled: np.ndarray, n_reference: int, positions: np.ndarray, count: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """MMD² (kernels x splits) and kernel norms, kernel by kernel and split by split."""
    distances = np.sqrt(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1))
    kernels = [np.exp(-distances**2 / (2 * sigma**2)) for sigma in direct_bandwidths(pooled, count)]
    kernels += [np.exp(-distances / sigma) for sigma in direct_bandwidths(pooled, count)]
    table = np.zeros((len(kernels), len(positions)))
    norms = np.zeros(len(kernels))
    everyone = set(range(len(pooled)))
    for k, kernel in enumerate(kernels):
        norms[k] = math.sqrt(sum(kernel[i, j] ** 2 for i in range(len(pooled)) for j in range(len(pooled))
                                 if i != j))
        for split, side in enumerate(positions):
            chosen = sorted(int(i) for i in side)
            table[k, split] = direct_mmd2(kernel, chosen, sorted(everyone - set(chosen)))
    return table, norms


def test_statistics_and_p_values_match_a_direct_implementation() -> None:
    rng = np.random.default_rng(4)
    reference, sample = rng.standard_normal((12, 3)), rng.standard_normal((9, 3)) + 0.4
    pooled = np.concatenate([reference, sample])
    permutations, count, seed = 40, 3, 5
    positions = draw_split_positions(len(pooled), len(reference), permutations, seed, torch.device("cpu"))
    table, norms = direct_table(pooled, len(reference), positions.numpy(), count)
    options = {"num_permutations": permutations, "num_bandwidths": count, "seed": seed}

    fuse = create_detector("mmd-fuse", **options).fit(reference).test(sample)
    smaller = min(len(reference), len(sample))
    lam = math.sqrt(smaller * (smaller - 1))
    normalised = table / (norms[:, None] / (smaller * (smaller - 1)))
    fused = (logsumexp(lam * normalised, axis=0) - math.log(len(table))) / lam
    assert fuse.details["mmd2"] == pytest.approx(table[:, 0].tolist(), rel=1e-4, abs=1e-6)
    assert fuse.statistic == pytest.approx(fused[0], rel=1e-4)
    exceeding = sum(fused[b] >= fused[0] for b in range(1, permutations + 1))
    assert fuse.p_value == (1 + exceeding) / (permutations + 1)

    agg = create_detector("mmd-agg", **options).fit(reference).test(sample)
    splits = permutations + 1
    single = np.array([[sum(table[k, i] >= table[k, j] for i in range(splits)) / splits
                        for j in range(splits)] for k in range(len(table))])
    smallest = single.min(axis=0)
    assert agg.details["p_values"] == pytest.approx(single[:, 0].tolist(), rel=1e-3)
    assert agg.statistic == pytest.approx(smallest[0])
    assert agg.p_value == sum(smallest[j] <= smallest[0] for j in range(splits)) / splits
    assert agg.is_drift == bool(agg.details["rejecting_kernels"])  # the threshold s* says the same thing


def test_product_and_gather_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    pooled = torch.tensor(rng.standard_normal((70, 4)), dtype=torch.float32)
    kernel = PooledDistances(pooled).kernel(kernel_module.KernelSpec("laplace", 2.0))
    values = {}
    for ratio in (0, 10**9):  # 0: always the product; huge: always the gather
        monkeypatch.setattr(kernel_module, "GATHER_COST_RATIO", ratio)
        splits = PermutationSplits(70, 60, 30, seed=2)
        values[splits.method] = splits.mmd2(kernel)
    assert set(values) == {"product", "gather"}
    assert torch.allclose(values["product"], values["gather"], rtol=1e-5, atol=1e-7)


def test_bandwidth_rows_are_chosen_by_value_not_position(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the row cap the bandwidths still are a symmetric function of the pool (exactness)."""
    monkeypatch.setattr(kernel_module, "MAX_BANDWIDTH_ROWS", 50)
    rng = np.random.default_rng(3)
    pooled = torch.tensor(rng.standard_normal((120, 6)), dtype=torch.float32)
    order = torch.from_numpy(rng.permutation(120))
    chosen = {tuple(row) for row in pooled[value_hashed_rows(pooled, 50)].tolist()}
    chosen_shuffled = {tuple(row) for row in pooled[order][value_hashed_rows(pooled[order], 50)].tolist()}
    assert chosen == chosen_shuffled and len(chosen) == 50
    grid = PooledDistances(pooled).bandwidth_grid(5)
    assert PooledDistances(pooled[order]).bandwidth_grid(5) == pytest.approx(grid, rel=1e-6)
    assert all(low < high for low, high in itertools.pairwise(grid))


@pytest.mark.parametrize("name", NEW)
def test_null_calibration_smoke(name: str) -> None:
    """100 clean-vs-clean trials: false-positive rate within a binomial bound, p-values near uniform."""
    p_values = []
    for trial in range(100):
        rng = np.random.default_rng(1000 + trial)
        detector = create_detector(name, seed=trial, num_permutations=100).fit(rng.standard_normal((30, 5)))
        p_values.append(detector.test(rng.standard_normal((20, 5))).p_value)
    p_values = np.array(p_values)
    # P(Binomial(100, 0.05) >= 12) < 0.005: a calibrated test fails this about once in 200 runs
    assert (p_values < 0.05).sum() <= 11
    assert p_values.min() >= 1 / 101
    assert stats.kstest(p_values, "uniform").pvalue > 0.001


# The Failing Loudly trial hook ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMixSpec:
    """A stand-in for a label-shift DriftSpec: a class mix and no corruption steps."""

    class_mix: tuple[tuple[str, float], ...] = (("one", 1.0),)
    steps: tuple = ()
    fraction: float = 1.0

    def draw_positions(self, pool_labels: np.ndarray, n: int, seed: int, class_names: tuple[str, ...],
                       known_classes: object = None) -> np.ndarray:
        wanted = class_names.index(self.class_mix[0][0])
        return np.flatnonzero(pool_labels == wanted)[:n]

    def affected_count(self, n: int) -> int:
        return 0


def test_trial_sample_uses_the_class_mix_hook() -> None:
    from benchmarks.failing_loudly import draw_trial_sample
    from zeal_core.corruptions import DriftSpec

    pool_rows = np.arange(100, 160)
    labels = np.arange(60) % 3
    rows, affected = draw_trial_sample(ClassMixSpec(), pool_rows, labels, 10, np.random.default_rng(0),
                                       class_names=("zero", "one", "two"))
    assert (labels[rows - 100] == 1).all() and not affected.any()
    rows, affected = draw_trial_sample(DriftSpec.parse("fog:2@0.3"), pool_rows, labels, 10,
                                       np.random.default_rng(0))
    assert len(set(rows.tolist())) == 10 and set(rows.tolist()) <= set(pool_rows.tolist())
    assert affected.sum() == 3


def test_failing_loudly_grid_runs_on_synthetic_embeddings() -> None:
    """Tiny grid: decisions for every detector, the paper's rows in the table, skipped sizes reported."""
    from benchmarks.failing_loudly import PAPER_ROWS, markdown, run_trials, summarise
    from zeal_core.corruptions import DriftSpec
    from zeal_core.embed import Embeddings

    rng = np.random.default_rng(0)

    def embeddings(shift: float) -> Embeddings:
        features = (rng.standard_normal((120, 6)) + shift).astype(np.float32)
        probs = np.full((120, 3), 1 / 3, dtype=np.float32)
        return Embeddings(features=features, probs=probs, preds=np.zeros(120, np.int64),
                          labels=np.arange(120) % 3, indices=np.arange(120))

    specs = [DriftSpec.parse("fog:3@0.5"), DriftSpec.parse("fog:3")]
    detectors = ["mmd", "mmd-fuse", "mmd-agg"]
    options = {name: {"num_permutations": 50} for name in detectors}
    trials = run_trials(embeddings(0.0), {specs[0].steps: embeddings(3.0)}, specs, detectors, (10, 40, 500),
                        60, 5, 2, 0.05, options, seed=0)
    assert trials["sizes"] == [10, 40] and trials["skipped_sizes"] == [500]
    for name in detectors:
        assert len(trials["null"][name][40]) == 5 and len(trials["shift"][name][40]) == 4
    assert np.mean(trials["shift"]["mmd-fuse"][40]) >= 0.5  # a 3-sigma shift on half or all of 40 items
    summary = summarise(trials)
    table = markdown({"trials": trials, "summary": summary})
    assert all(label in table for label in PAPER_ROWS) and "mmd-agg - mmd" in table


def test_failing_loudly_keeps_new_kinds_and_label_shift_out_of_the_paper_table() -> None:
    """New kinds and label shift get their own rows by group; the paper-comparable rate is ImageNet-C's."""
    from benchmarks.failing_loudly import BEYOND_SPECS, markdown, run_trials, shift_group, summarise
    from zeal_core.corruptions import DriftSpec
    from zeal_core.embed import Embeddings

    rng = np.random.default_rng(1)
    labels = np.arange(200) % 4
    features = (rng.standard_normal((200, 5)) + labels[:, None]).astype(np.float32)  # classes apart
    probs = np.eye(4, dtype=np.float32)[labels]
    clean = Embeddings(features=features, probs=probs, preds=labels, labels=labels, indices=np.arange(200))
    rotated = Embeddings(features=features + 5.0, probs=probs, preds=labels, labels=labels,
                         indices=np.arange(200))
    specs = [DriftSpec.parse(text) for text in ("fog:3", "rotation:5", "label_shift:5")]
    assert [shift_group(spec) for spec in specs] == ["imagenet-c", "geometric", "label shift"]
    assert {shift_group(DriftSpec.parse(text)) for text in BEYOND_SPECS} == {"geometric", "capture",
                                                                               "label shift"}
    trials = run_trials(clean, {specs[1].steps: rotated}, specs, ["mmd", "bbsd"], (40,), 80, 2, 3, 0.05,
                        {"mmd": {"num_permutations": 50}}, seed=0, class_names=["a", "b", "c", "d"])
    summary = summarise(trials)
    groups = summary["accuracy_by_group"]["bbsd"]
    assert set(groups) == {"imagenet-c", "geometric", "label shift"}
    assert summary["accuracy"]["mmd"][40]["trials"] == 3  # fog only: the paper-comparable set
    assert groups["label shift"][40]["rate"] == 1.0  # a strong class-mix change moves every prediction share
    assert summary["accuracy_by_group"]["mmd"]["geometric"][40]["rate"] == 1.0
    assert "| bbsd | label shift |" in markdown({"trials": trials, "summary": summary})
