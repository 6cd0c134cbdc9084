"""The detector grid: how often every detector flags every drift, and how often it flags clean samples.

Each trial cuts a seeded image subset afresh into a reference and a disjoint sample, fits a
``FittedReference`` on the reference rows (the one place detectors are fitted) and checks the sample rows
clean and under every drift with ``check(..., parts=("detectors",))``. Every drift tests the same sample
rows, so the rows of the table are paired; fresh splits make the trials exchangeable, so the clean row
estimates each detector's real false-positive rate at these sizes (with one fixed reference, every trial
would share that reference's quirks). The images are embedded once clean and once per drift; a trial only
picks rows. A drift with a class mix (label shift, unseen classes) draws its sample rows from the trial's
non-reference rows by class with ``DriftSpec.draw_positions`` (it needs the images' labels); the other drifts
test the same rows.

The DVC pipeline's ``drift-eval`` stage writes this table (``reports/<dataset>/drift.csv``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.drift import DriftResult, detector_info, list_detectors
from zeal_core.embed import Embeddings, compute_embeddings
from zeal_core.errors import ConfigError
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report
from zeal_core.reference.config import ReferenceConfig
from zeal_core.reference.fitted import FittedReference
from zeal_core.sampling import seeded_subset
from zeal_core.validate import check_alpha, check_int

__all__ = ["DetectorGridConfig", "DetectorRow", "DetectorTable", "detector_table"]


@dataclass(frozen=True)
class DetectorGridConfig:
    """Which detectors and drifts the grid tests, at which sizes, how many times."""

    detectors: tuple[str, ...] = ()  # detector names; () = every registered detector
    drifts: tuple[str, ...] = ("gaussian_noise:3",)  # drift specs tested besides clean (DriftSpec text)
    sample_size: int = 100  # images per tested sample
    reference_size: int = 200  # images each trial's reference is fitted on (disjoint from its sample)
    max_images: int = 0  # images used (a seeded subset); every trial splits them afresh; 0 = all
    trials: int = 20  # reference/sample splits, each tested clean and under every drift
    alpha: float = 0.05  # significance level of every detector
    batch_size: int = 256  # images per forward pass when embedding
    # per-detector options, e.g. the check profile's permutations (``CheckProfile.detector_options()``)
    detector_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int(self.sample_size, "sample_size", 2)
        check_int(self.reference_size, "reference_size", 2)
        check_int(self.max_images, "max_images", 0)
        check_int(self.trials, "trials", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_alpha(self.alpha)
        object.__setattr__(self, "detectors", tuple(self.detectors))
        object.__setattr__(self, "drifts", tuple(self.drifts))

    def specs(self) -> list[DriftSpec]:
        """Clean first, then every drift, parsed (an unknown corruption is a ``ConfigError``)."""
        return [DriftSpec.clean()] + [DriftSpec.parse(text) for text in self.drifts]

    def detector_names(self) -> list[str]:
        """The detectors tested, checked against the registry (a ``ConfigError`` listing the known ones)
        before any image is embedded."""
        for name in self.detectors:
            detector_info(name)
        return list(self.detectors) or list_detectors()


@dataclass(frozen=True)
class DetectorRow:
    """How often one detector flags one drift (or, for ``clean``, flags no drift: false positives)."""

    detector: str  # registry name
    drift: str  # drift-spec text, "clean" for the no-drift check
    corruption: str  # first corruption of the spec, "clean" for the no-drift check
    severity: float  # its severity level, 0 for clean
    detection_rate: float  # share of trials with is_drift (for clean: the false-positive rate)
    trials: int  # samples tested
    median_p_value: float  # median over trials
    mean_runtime_s: float  # mean seconds per test


@dataclass(frozen=True)
class DetectorTable:
    """Detection rates of every detector, for several drifts, at one sample size."""

    rows: tuple[DetectorRow, ...]  # one per (detector, drift), clean rows included
    sample_size: int  # images per tested sample
    reference_size: int  # images the detectors were fitted on
    alpha: float  # significance level
    seconds: float  # wall time, s

    def detectors(self) -> list[str]:
        """Detector names in table order."""
        return list(dict.fromkeys(row.detector for row in self.rows))

    def metrics(self) -> dict[str, Any]:
        """Per detector: false-positive rate on clean samples and mean detection rate over the drifts."""
        per_detector: dict[str, Any] = {}
        for name in self.detectors():
            mine = [row for row in self.rows if row.detector == name]
            clean = [row.detection_rate for row in mine if row.corruption == "clean"]
            drifted = [row.detection_rate for row in mine if row.corruption != "clean"]
            per_detector[name] = {
                "false_positive_rate": float(np.mean(clean)) if clean else math.nan,
                "mean_detection_rate": float(np.mean(drifted)) if drifted else math.nan,
                "mean_runtime_s": float(np.mean([row.mean_runtime_s for row in mine])),
            }
        return {"sample_size": self.sample_size, "reference_size": self.reference_size, "alpha": self.alpha,
                "trials": self.rows[0].trials if self.rows else 0, "seconds": round(self.seconds, 2),
                "detectors": per_detector}


def detector_table(
    model: torch.nn.Module,
    model_config: Any,
    images: torch.Tensor,
    config: DetectorGridConfig,
    *,
    labels: torch.Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    device: torch.device | str = "auto",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> DetectorTable:
    """Detection rate per detector and drift, and the false-positive rate on clean samples.

    A seeded subset of ``max_images`` images is embedded once clean and once per drift (each drift
    corrupts it with seed ``seed + 1``). Each trial shuffles the subset afresh, fits a reference on
    ``reference_size`` clean rows and checks ``sample_size`` other rows under every drift (see the module
    docstring for why).

    Args:
        model: The classifier whose features and softmax the detectors read.
        model_config: Its ``ModelConfig``.
        images: uint8 validation images.
        config: Detectors, drifts, sizes, trials and alpha.
        labels: The images' dataset labels; needed only by drifts with a class mix.
        class_names: The dataset's class names (class mixes name classes); default "0", "1", ...
        device: Where to run the model.
        seed: Seeds the subset, the corruptions, the trials' splits and the detectors.
        progress: Receives one ``drift-eval`` event per drift embedded and per trial.
        cancel: Checked between drifts and trials.

    Raises:
        ConfigError: Too few images for the reference plus one sample, an unknown detector or corruption, or
            a class mix without labels.
    """
    start = time.perf_counter()
    names, specs = config.detector_names(), config.specs()
    if labels is None and any(spec.class_mix is not None for spec in specs):
        raise ConfigError("a drift with a class mix (label_shift, unseen_classes) needs the images' labels")
    chosen = seeded_subset(images.shape[0], config.max_images, seed)
    subset = images[chosen]
    subset_labels = None if labels is None else np.asarray(labels)[chosen.numpy()]
    names_of_classes = tuple(class_names) if class_names is not None else \
        tuple(str(index) for index in range(int(subset_labels.max()) + 1 if subset_labels is not None else 0))
    needed = config.reference_size + config.sample_size
    if subset.shape[0] < needed:
        raise ConfigError(f"drift-eval needs reference_size + sample_size = {needed} validation images, "
                          f"it has {subset.shape[0]}: lower drift_eval's reference_size or sample_size, or "
                          "raise max_images")
    embedded = _embed_drifts(model, model_config, subset, specs, config.batch_size, device, seed,
                             progress, cancel)
    draws = _ClassDraws(subset_labels, names_of_classes, config.sample_size, specs)
    outcomes = _run_trials(embedded, names, config, seed, draws, progress, cancel)
    rows = [_row(name, spec, outcomes[name][index])
            for name in names for index, spec in enumerate(specs)]
    return DetectorTable(rows=tuple(rows), sample_size=config.sample_size,
                         reference_size=config.reference_size, alpha=config.alpha,
                         seconds=time.perf_counter() - start)


def _embed_drifts(model: torch.nn.Module, model_config: Any, subset: torch.Tensor, specs: Sequence[DriftSpec],
                  batch_size: int, device: torch.device | str, seed: int, progress: ProgressCallback | None,
                  cancel: CancelToken | None) -> list[Embeddings]:
    """The subset embedded once per spec (clean first), in spec order."""
    embedded = []
    for step, spec in enumerate(specs):
        check_cancel(cancel)
        drifted = subset if spec.is_clean else spec.apply(subset, seed=seed + 1)
        embedded.append(compute_embeddings(model, model_config, drifted, device, batch_size=batch_size))
        report(progress, "drift-eval", step + 1, len(specs), f"embedded {spec.text}")
    return embedded


@dataclass(frozen=True)
class _ClassDraws:
    """Which rows a drift's sample holds in a trial: the trial's first rows, or a class-mix draw."""

    labels: np.ndarray | None  # dataset label per subset row (None: no class mix in the grid)
    class_names: tuple[str, ...]  # the dataset's classes
    sample_size: int  # rows per sample
    specs: Sequence[DriftSpec]  # the drifts, clean first

    def rows(self, index: int, pool: np.ndarray, trial_seed: int) -> np.ndarray:
        """The sample rows of drift ``index`` among the trial's non-reference rows ``pool``."""
        spec = self.specs[index]
        if spec.class_mix is None:
            return pool[: self.sample_size]
        chosen = spec.draw_positions(self.labels[pool], self.sample_size, trial_seed,
                                     class_names=self.class_names)
        return pool[np.asarray(chosen, dtype=np.int64)]


def _run_trials(embedded: Sequence[Embeddings], names: Sequence[str], config: DetectorGridConfig, seed: int,
                draws: _ClassDraws, progress: ProgressCallback | None, cancel: CancelToken | None
                ) -> dict[str, list[list[DriftResult]]]:
    """``outcomes[detector][drift]``: one DriftResult per trial, each trial on a fresh split."""
    rng = np.random.default_rng(seed)
    reference_config = ReferenceConfig(detectors=tuple(names), alpha=config.alpha, seed=seed,
                                       batch_size=config.batch_size, detector_options=config.detector_options)
    outcomes: dict[str, list[list[DriftResult]]] = {name: [[] for _ in embedded] for name in names}
    for trial in range(config.trials):
        check_cancel(cancel)
        permutation = rng.permutation(len(embedded[0]))
        reference_rows = permutation[: config.reference_size]
        pool = permutation[config.reference_size:]
        reference = FittedReference.from_embeddings(embedded[0].subset(reference_rows), reference_config)
        for index, drifted in enumerate(embedded):
            check_cancel(cancel)
            rows = draws.rows(index, pool, seed * 1_000 + trial)
            checked = reference.check(drifted.subset(rows), parts=("detectors",))
            for name, result in zip(reference.detectors, checked.results, strict=True):
                outcomes[name][index].append(result)
        report(progress, "drift-eval", trial + 1, config.trials, f"trial {trial + 1}/{config.trials}")
    return outcomes


def _row(name: str, spec: DriftSpec, results: Sequence[DriftResult]) -> DetectorRow:
    if spec.is_clean:
        corruption, severity = "clean", 0.0
    elif spec.steps:
        corruption, severity = spec.steps[0]
    else:
        corruption, severity = spec.class_mix.kind, spec.class_mix.severity
    return DetectorRow(detector=name, drift=spec.text, corruption=corruption, severity=float(severity),
                       detection_rate=float(np.mean([result.is_drift for result in results])),
                       trials=len(results),
                       median_p_value=float(np.median([result.p_value for result in results])),
                       mean_runtime_s=float(np.mean([result.runtime_s for result in results])))
