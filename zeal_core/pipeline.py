"""The reproducible pipeline of ``dvc.yaml``: download, prepare, train, evaluate, drift-eval, report.

Each stage is ``python -m zeal_core.pipeline <stage> [--params params.yaml]``. Every knob lives in
``params.yaml``: the top-level ``dataset`` picks a profile, and each stage reads its section for that dataset
(``train.<dataset>``, ``evaluate.<dataset>``, ``drift_eval.<dataset>``), so ``dvc exp run -S
dataset=imagenette`` switches the whole pipeline and ``-S drift_eval.digits.trials=50`` re-runs only the
stages that depend on it.

Where each stage writes (``<d>`` is the dataset name; ``dvc.yaml`` declares the same paths):

- ``data/pipeline/<d>/raw/``: the raw source (the Imagenette archive; a note for the embedded digits).
- ``data/pipeline/<d>/prepared/``: the decoded uint8 cache (``ZEAL_DATA_DIR`` while the stages run).
- ``models/pipeline/<d>/``: the trained model's registry folder (safetensors + card JSON; ``active.json``
  names it, so ``ZEAL_MODELS_DIR=models/pipeline/<d>`` shows it in the app).
- ``reports/<d>/``: small JSON/CSV/Markdown/PNG results, meant to be committed.

The library functions ``robustness_table``, ``detector_table`` and ``write_report`` do the work and can be
called without any files (the stages only add reading parameters and writing results).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from zeal_core.errors import ConfigError, ZealError
from zeal_core.fileio import atomic_write_text
from zeal_core.jsonable import json_default
from zeal_core.paths import safe_name
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["MCE_DEFINITION", "STAGES", "DetectorTable", "DriftEvalParams", "EvaluateParams", "PipelineParams",
           "RobustnessTable", "StagePaths", "detector_table", "load_params", "robustness_table", "run_stage",
           "write_report"]

STAGES = ("download", "prepare", "train", "evaluate", "drift-eval", "report")
PIPELINE_DATASETS = ("digits", "imagenette")  # folder:PATH is not a pipeline source (no stable path to track)
# How the mean corruption error is defined in every table and report written here.
MCE_DEFINITION = (
    "mean corruption error (mCE, unnormalised) = mean over corruptions and severities of the top-1 error "
    "(1 - accuracy) on the corrupted validation images; ImageNet-C's normalisation by an AlexNet baseline "
    "is not used (there is no baseline model for these datasets). The relative mCE is mCE minus the clean "
    "error, i.e. how much error the corruptions add."
)


# ---------------------------------------------------------------------------------------------------------
# Parameters.


@dataclass(frozen=True)
class EvaluateParams:
    """The robustness table: which corruptions and severities, on how many validation images."""

    corruptions: tuple[str, ...] = ()  # corruption names; empty = every corruption in the library
    severities: tuple[float, ...] = (1, 2, 3, 4, 5)  # ImageNet-C severity levels, in (0, 5]
    max_images: int = 0  # validation images used (a seeded, class-mixed subset); 0 = all of them
    batch_size: int = 256  # images per forward pass
    resize_first: bool = True  # corrupt at the model's input size (fast on a CPU) instead of the data's size


@dataclass(frozen=True)
class DriftEvalParams:
    """The detector table: detection rate per detector and drift, and the false-positive rate."""

    detectors: tuple[str, ...] = ()  # detector names; empty = every registered detector
    corruptions: tuple[str, ...] = ("gaussian_noise", "contrast", "gaussian_blur")  # drifts tested
    severities: tuple[float, ...] = (1, 3, 5)  # severity levels tested per corruption
    fraction: float = 1.0  # share of each sample that is corrupted (DriftSpec's @fraction)
    sample_size: int = 100  # images per tested sample
    reference_size: int = 200  # images the detectors are fitted on (disjoint from every sample)
    max_images: int = 0  # validation images used (seeded subset); trials split them afresh; 0 = all
    trials: int = 20  # samples drawn per drift (and for the clean false-positive check)
    alpha: float = 0.05  # significance level of every detector
    batch_size: int = 256  # images per forward pass when embedding


@dataclass(frozen=True)
class PipelineParams:
    """Everything the stages read from ``params.yaml``."""

    dataset: str  # "digits" or "imagenette"
    seed: int = 0  # seeds subsets, corruptions and trials (and training unless train sets its own)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    threads: int = 0  # torch CPU threads; 0 = torch's own choice
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides on default_config(dataset)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)  # robustness table settings
    drift_eval: DriftEvalParams = field(default_factory=DriftEvalParams)  # detector table settings
    machine: str = ""  # free text naming the machine, written into the report (e.g. "2 shared CPU cores")


def _profile(params: dict[str, Any], section: str, dataset: str, path: Path) -> dict[str, Any]:
    values = params.get(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: '{section}' must be a mapping with one entry per dataset")
    profile = values.get(dataset) or {}
    if not isinstance(profile, dict):
        raise ConfigError(f"{path}: '{section}.{dataset}' must be a mapping of settings")
    return profile


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """A frozen params dataclass from a mapping; lists become tuples; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    converted = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    try:
        return cls(**converted)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_positive(value: Any, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where} = {value!r}: use a whole number >= {low}")


def load_params(path: Path | str = "params.yaml") -> PipelineParams:
    """Read and check the pipeline's parameters.

    Raises:
        ConfigError: The file is missing or unreadable, the dataset is not a pipeline dataset, or a setting
            is unknown or out of range (the message names the key and the file).
    """
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read pipeline parameters {path}: {error}") from None
    dataset = str(params.get("dataset", "digits"))
    if dataset not in PIPELINE_DATASETS:
        raise ConfigError(f"{path}: dataset = {dataset!r}; the pipeline runs on {list(PIPELINE_DATASETS)}")
    general = params.get("pipeline") or {}
    if not isinstance(general, dict):
        raise ConfigError(f"{path}: 'pipeline' must be a mapping of settings")
    evaluate = _build(EvaluateParams, _profile(params, "evaluate", dataset, path),
                      f"{path}: evaluate.{dataset}")
    drift = _build(DriftEvalParams, _profile(params, "drift_eval", dataset, path),
                   f"{path}: drift_eval.{dataset}")
    _check_positive(evaluate.batch_size, f"evaluate.{dataset}.batch_size")
    _check_positive(evaluate.max_images, f"evaluate.{dataset}.max_images", low=0)
    for key in ("sample_size", "reference_size", "trials", "batch_size"):
        _check_positive(getattr(drift, key), f"drift_eval.{dataset}.{key}", low=2 if "size" in key else 1)
    _check_positive(drift.max_images, f"drift_eval.{dataset}.max_images", low=0)
    for where, severities in ((f"evaluate.{dataset}", evaluate.severities),
                              (f"drift_eval.{dataset}", drift.severities)):
        if not severities or any(not isinstance(s, int | float) or not 0 < s <= 5 for s in severities):
            raise ConfigError(f"{path}: {where}.severities = {list(severities)}: use numbers in (0, 5]")
    if not 0 < drift.fraction <= 1:
        raise ConfigError(f"{path}: drift_eval.{dataset}.fraction = {drift.fraction}: use a share in (0, 1]")
    if not 0 < drift.alpha < 1:
        raise ConfigError(f"{path}: drift_eval.{dataset}.alpha = {drift.alpha}: use e.g. 0.05")
    seed = general.get("seed", 0)
    threads = general.get("threads", 0)
    _check_positive(seed, "pipeline.seed", low=0)
    _check_positive(threads, "pipeline.threads", low=0)
    report_section = params.get("report") or {}
    return PipelineParams(
        dataset=dataset,
        seed=seed,
        device=str(general.get("device", "auto")),
        threads=threads,
        train=dict(_profile(params, "train", dataset, path)),
        evaluate=evaluate,
        drift_eval=drift,
        machine=str(report_section.get("machine", "") if isinstance(report_section, dict) else ""),
    )


# ---------------------------------------------------------------------------------------------------------
# Where each stage writes.


@dataclass(frozen=True)
class StagePaths:
    """Output locations of every stage for one dataset (``dvc.yaml`` declares the same paths)."""

    raw: Path  # download stage output folder
    prepared: Path  # prepare stage output folder (ZEAL_DATA_DIR for later stages)
    models: Path  # train stage output folder (a model registry root)
    reports: Path  # small committed results

    @classmethod
    def for_dataset(cls, dataset: str, root: Path | str = ".") -> StagePaths:
        """The paths for ``dataset`` under the project folder ``root``."""
        root = Path(root)
        name = safe_name(dataset, "dataset")
        return cls(raw=root / "data" / "pipeline" / name / "raw",
                   prepared=root / "data" / "pipeline" / name / "prepared",
                   models=root / "models" / "pipeline" / name,
                   reports=root / "reports" / name)

    @property
    def data_json(self) -> Path:
        """Dataset summary written by the prepare stage."""
        return self.reports / "data.json"

    @property
    def train_json(self) -> Path:
        """Model version and training metrics written by the train stage."""
        return self.reports / "train.json"

    @property
    def robustness_json(self) -> Path:
        """Robustness metrics (``dvc metrics``)."""
        return self.reports / "robustness.json"

    @property
    def robustness_csv(self) -> Path:
        """Accuracy per corruption and severity (``dvc plots``)."""
        return self.reports / "robustness.csv"

    @property
    def drift_json(self) -> Path:
        """Detector metrics (``dvc metrics``)."""
        return self.reports / "drift.json"

    @property
    def drift_csv(self) -> Path:
        """Detection rate per detector, corruption and severity (``dvc plots``)."""
        return self.reports / "drift.csv"

    @property
    def report_md(self) -> Path:
        """The human-readable report."""
        return self.reports / "report.md"


# ---------------------------------------------------------------------------------------------------------
# The robustness table.


@dataclass(frozen=True)
class RobustnessTable:
    """Accuracy of one model on clean and corrupted validation images."""

    clean_accuracy: float  # top-1 share correct on the clean images
    rows: tuple[tuple[str, float, float], ...]  # (corruption, severity, accuracy)
    n: int  # validation images per cell
    seconds: float  # wall time, s

    def corruption_means(self) -> dict[str, float]:
        """Mean accuracy over severities, per corruption."""
        means: dict[str, list[float]] = {}
        for name, _, accuracy in self.rows:
            means.setdefault(name, []).append(accuracy)
        return {name: float(np.mean(values)) for name, values in means.items()}

    @property
    def mean_corruption_error(self) -> float:
        """Unnormalised mCE: mean error over every (corruption, severity) cell (see ``MCE_DEFINITION``)."""
        return float(np.mean([1.0 - accuracy for _, _, accuracy in self.rows])) if self.rows else math.nan

    @property
    def relative_mce(self) -> float:
        """mCE minus the clean error: the error the corruptions add."""
        return self.mean_corruption_error - (1.0 - self.clean_accuracy)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary for ``dvc metrics`` (numbers only; ``MCE_DEFINITION`` says what mCE is)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "mean_corruption_error": self.mean_corruption_error,
            "relative_mce": self.relative_mce,
            "mean_corrupted_accuracy": 1.0 - self.mean_corruption_error,
            "n": self.n,
            "seconds": round(self.seconds, 2),
            "corruption_accuracy": self.corruption_means(),
        }


def _val_subset(images: torch.Tensor, labels: torch.Tensor, max_images: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset (all classes mixed) of at most ``max_images`` images; 0 keeps all."""
    if max_images <= 0 or max_images >= images.shape[0]:
        return images, labels
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:max_images]
    order = order.sort().values
    return images[order], labels[order]


def robustness_table(
    model: torch.nn.Module,
    model_config: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    corruptions: Sequence[str],
    severities: Sequence[float],
    *,
    device: torch.device | str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    resize_first: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> RobustnessTable:
    """Top-1 accuracy on clean images and on every (corruption, severity) version of them.

    Args:
        model: The classifier (eval mode is set by the predictor).
        model_config: Its ``ModelConfig`` (input size).
        images: uint8 N x 3 x H x W validation images.
        labels: int64 N true classes.
        corruptions: Corruption names from ``zeal_core.corruptions.list_corruptions()``.
        severities: Severity levels in (0, 5].
        device: Where to run the model.
        seed: Seed of the corruptions' randomness (same images, same noise in every run).
        batch_size: Images per forward pass.
        resize_first: Resize to the model's input size before corrupting (what the model sees is the same
            kind of image; corrupting 64 px instead of 160 px images is about 6x cheaper).
        progress: Receives one ``evaluate`` event per cell.
        cancel: Checked between cells.
    """
    from zeal_core.augment import resize_uint8
    from zeal_core.corruptions import apply
    from zeal_core.evaluate import predict_logits

    start = time.perf_counter()
    if resize_first:
        images = resize_uint8(images, model_config.image_size)

    def accuracy(batch: torch.Tensor) -> float:
        logits = predict_logits(model, model_config, batch, device, batch_size)
        return float((logits.argmax(dim=1) == labels).float().mean())

    clean = accuracy(images)
    rows: list[tuple[str, float, float]] = []
    total = len(corruptions) * len(severities)
    for name in corruptions:
        for severity in severities:
            check_cancel(cancel)
            corrupted = apply(images, name, float(severity), seed=seed)
            rows.append((name, float(severity), accuracy(corrupted)))
            report(progress, "evaluate", len(rows), total, f"{name} severity {severity}: {rows[-1][2]:.1%}")
    return RobustnessTable(clean_accuracy=clean, rows=tuple(rows), n=int(images.shape[0]),
                           seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------
# The detector table.


@dataclass(frozen=True)
class DetectorRow:
    """How often one detector flags one drift (or, for ``clean``, flags no drift: false positives)."""

    detector: str  # registry name
    drift: str  # drift-spec text, "clean" for the no-drift check
    corruption: str  # corruption name, "clean" for the no-drift check
    severity: float  # severity level, 0 for clean
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


def _embed_arrays(model: torch.nn.Module, model_config: Any, images: torch.Tensor, device: Any,
                  batch_size: int) -> dict[str, np.ndarray]:
    from zeal_core.embed import compute_embeddings

    embeddings = compute_embeddings(model, model_config, images, device, batch_size=batch_size)
    return {"features": np.asarray(embeddings.features), "probs": np.asarray(embeddings.probs)}


def detector_table(
    model: torch.nn.Module,
    model_config: Any,
    images: torch.Tensor,
    settings: DriftEvalParams,
    *,
    device: torch.device | str = "auto",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> DetectorTable:
    """Detection rate per detector and drift, and the false-positive rate on clean samples.

    A seeded subset of ``max_images`` validation images is embedded once clean and once per drift (each
    drift corrupts it with a fixed seed). Each trial shuffles the subset afresh and cuts it into a
    reference of ``reference_size`` clean images and a disjoint sample of ``sample_size`` images; every
    detector is fitted on that reference and tests the sample under every drift (the same images for every
    drift, so the rows are paired). Fresh splits make the trials exchangeable, so the clean row estimates
    the detector's real false-positive rate at these sizes (with one fixed reference, every trial would
    share that reference's quirks).

    Args:
        model: The classifier whose features and softmax the detectors read.
        model_config: Its ``ModelConfig``.
        images: uint8 validation images (labels are not needed).
        settings: Detectors, drifts, sizes, trials and alpha.
        device: Where to run the model.
        seed: Seeds the subset, the corruptions and the trials' splits.
        progress: Receives one ``drift-eval`` event per drift embedded and per trial.
        cancel: Checked between drifts and trials.

    Raises:
        ConfigError: Too few validation images for the reference plus one sample, or an unknown detector
            or corruption.
    """
    from zeal_core.corruptions import DriftSpec
    from zeal_core.drift import create_detector, list_detectors

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)
    if settings.max_images:
        order = order[: settings.max_images]
    subset = images[order.sort().values]
    needed = settings.reference_size + settings.sample_size
    if subset.shape[0] < needed:
        raise ConfigError(f"drift-eval needs reference_size + sample_size = {needed} validation images, "
                          f"it has {subset.shape[0]}: lower drift_eval's reference_size or sample_size, or "
                          "raise max_images")
    names = list(settings.detectors) or list_detectors()
    detectors = [create_detector(name, alpha=settings.alpha) for name in names]
    drifts = [DriftSpec.parse("clean")] + [
        DriftSpec.parse(f"{name}:{severity:g}" + (f"@{settings.fraction:g}" if settings.fraction < 1 else ""))
        for name in settings.corruptions for severity in settings.severities
    ]
    arrays = []
    for step, spec in enumerate(drifts):
        check_cancel(cancel)
        drifted = subset if spec.is_clean else spec.apply(subset, seed=seed + 1)
        arrays.append(_embed_arrays(model, model_config, drifted, device, settings.batch_size))
        report(progress, "drift-eval", step + 1, len(drifts), f"embedded {spec.text}")
    rng = np.random.default_rng(seed)
    # outcomes[detector][drift] = list of (is_drift, p_value, runtime_s), one per trial
    outcomes = [[[] for _ in drifts] for _ in names]
    for trial in range(settings.trials):
        permutation = rng.permutation(subset.shape[0])
        reference_rows = permutation[: settings.reference_size]
        sample_rows = permutation[settings.reference_size:needed]
        for detector, per_drift in zip(detectors, outcomes, strict=True):
            check_cancel(cancel)
            detector.fit(arrays[0][detector.input_kind][reference_rows])
            for drift_index in range(len(drifts)):
                result = detector.test(arrays[drift_index][detector.input_kind][sample_rows])
                per_drift[drift_index].append((bool(result.is_drift), float(result.p_value),
                                               float(result.runtime_s)))
        report(progress, "drift-eval", trial + 1, settings.trials, f"trial {trial + 1}/{settings.trials}")
    rows: list[DetectorRow] = []
    for name, per_drift in zip(names, outcomes, strict=True):
        for spec, results in zip(drifts, per_drift, strict=True):
            corruption, severity = ("clean", 0.0) if spec.is_clean else spec.steps[0]
            rows.append(DetectorRow(detector=name, drift=spec.text, corruption=corruption,
                                    severity=float(severity),
                                    detection_rate=float(np.mean([r[0] for r in results])),
                                    trials=len(results),
                                    median_p_value=float(np.median([r[1] for r in results])),
                                    mean_runtime_s=float(np.mean([r[2] for r in results]))))
    return DetectorTable(rows=tuple(rows), sample_size=settings.sample_size,
                         reference_size=settings.reference_size, alpha=settings.alpha,
                         seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------
# Files: JSON, CSV, plots and the Markdown report.


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False, default=json_default) + "\n")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def machine_description(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a result was computed: OS, CPU count, torch threads and device, library versions."""
    from zeal_core.device import describe_device, resolve_device

    return {
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": describe_device(resolve_device(device)),
        "torch": torch.__version__,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def write_plots(robustness_rows: Sequence[dict[str, Any]], drift_rows: Sequence[dict[str, Any]],
                clean_accuracy: float, folder: Path) -> list[Path]:
    """PNG plots: accuracy vs severity per corruption, and detection rate per detector and drift.

    Args:
        robustness_rows: Rows of ``robustness.csv`` (corruption, severity, accuracy).
        drift_rows: Rows of ``drift.csv`` (detector, corruption, severity, detection_rate).
        clean_accuracy: Drawn as a dashed line on the first plot.
        folder: Where the PNGs go.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    written = []
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    corruptions = list(dict.fromkeys(row["corruption"] for row in robustness_rows))
    colors = plt.get_cmap("tab20")
    for index, name in enumerate(corruptions):
        points = sorted((float(r["severity"]), float(r["accuracy"])) for r in robustness_rows
                        if r["corruption"] == name)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
                  color=colors(index % 20))
    axes.axhline(clean_accuracy, color="black", linestyle="--", label="clean")
    axes.set(xlabel="severity", ylabel="top-1 accuracy", ylim=(0, 1.02), title="Accuracy vs severity")
    axes.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    path = folder / "accuracy_vs_severity.png"
    figure.savefig(path)
    plt.close(figure)
    written.append(path)

    detectors = list(dict.fromkeys(row["detector"] for row in drift_rows))
    drifts = list(dict.fromkeys(row["drift"] for row in drift_rows))
    if detectors and drifts:
        figure, axes = plt.subplots(figsize=(max(6, 0.7 * len(drifts) + 2), 0.45 * len(detectors) + 1.8),
                                    dpi=100)
        rate = {(r["detector"], r["drift"]): float(r["detection_rate"]) for r in drift_rows}
        grid = np.array([[rate.get((d, s), math.nan) for s in drifts] for d in detectors])
        image = axes.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes.set_xticks(range(len(drifts)), drifts, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(range(len(detectors)), detectors, fontsize=8)
        for (i, j), value in np.ndenumerate(grid):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 0.6 else "black")
        figure.colorbar(image, ax=axes, label="detection rate (clean: false positives)")
        axes.set_title("Detection rate per detector and drift")
        figure.tight_layout()
        path = folder / "detection_rate.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_report(paths: StagePaths, params: PipelineParams) -> Path:
    """Write ``report.md`` (and its PNG plots) from the JSON/CSV files of the earlier stages.

    Returns:
        The report's path.
    """
    data = json.loads(paths.data_json.read_text())
    train = json.loads(paths.train_json.read_text())
    robustness = json.loads(paths.robustness_json.read_text())
    drift = json.loads(paths.drift_json.read_text())
    robustness_rows = _read_csv(paths.robustness_csv)
    drift_rows = _read_csv(paths.drift_csv)
    write_plots(robustness_rows, drift_rows, robustness["clean_accuracy"], paths.reports)

    severities = list(dict.fromkeys(row["severity"] for row in robustness_rows))
    corruptions = list(dict.fromkeys(row["corruption"] for row in robustness_rows))
    cell = {(row["corruption"], row["severity"]): float(row["accuracy"]) for row in robustness_rows}
    accuracy_rows = [[name, *(_pct(cell[(name, s)]) for s in severities),
                      _pct(robustness["corruption_accuracy"][name])] for name in corruptions]
    detectors = list(dict.fromkeys(row["detector"] for row in drift_rows))
    drifts = list(dict.fromkeys(row["drift"] for row in drift_rows))
    rate = {(row["detector"], row["drift"]): float(row["detection_rate"]) for row in drift_rows}
    detector_rows = [[name, *(f"{rate[(name, d)]:.2f}" for d in drifts),
                      f"{drift['detectors'][name]['mean_runtime_s'] * 1000:.1f}"] for name in detectors]
    machine = train.get("machine", {})
    recipe = train.get("recipe", {})
    lines = [
        f"# Robustness and drift report: {params.dataset}",
        "",
        f"Written by `dvc repro` (stage `report`) on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "## Setup",
        "",
        f"- Machine: {params.machine or 'not named (set report.machine in params.yaml)'}; detected: "
        f"{machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs visible, "
        f"device {machine.get('device', '?')}, torch {machine.get('torch', '?')}.",
        f"- Data: `{data['dataset']}`, {data['num_train']:,} train / {data['num_val']:,} val images, "
        f"{data['num_classes']} classes, stored at {data['image_size']} px, fingerprint "
        f"`{data['fingerprint'][:12]}`.",
        f"- Model: `{train['version']}` ({recipe.get('arch', '?')}, {recipe.get('epochs', '?')} epochs at "
        f"{recipe.get('image_size', '?')} px, batch {recipe.get('batch_size', '?')}, "
        f"{recipe.get('optimizer', '?')} lr {recipe.get('lr', '?')}), trained in "
        f"{train.get('seconds', float('nan')):.0f} s.",
        f"- Robustness table: {robustness['n']} validation images per cell; corruptions applied at the "
        f"model's input size: {params.evaluate.resize_first}; took {robustness['seconds']:.0f} s.",
        f"- Detector table: reference {drift['reference_size']} images, samples of {drift['sample_size']}, "
        f"{drift['trials']} trials per drift, alpha {drift['alpha']}; took {drift['seconds']:.0f} s.",
        "",
        "## Robustness",
        "",
        f"- Clean accuracy: **{_pct(robustness['clean_accuracy'])}**",
        f"- Mean corruption error (mCE): **{_pct(robustness['mean_corruption_error'])}**; relative mCE "
        f"(added error): {_pct(robustness['relative_mce'])}",
        f"- Definition: {MCE_DEFINITION}",
        "",
        "Top-1 accuracy per corruption and severity:",
        "",
        _table(["corruption", *(f"s{float(s):g}" for s in severities), "mean"], accuracy_rows),
        "",
        "![accuracy vs severity](accuracy_vs_severity.png)",
        "",
        "## Drift detectors",
        "",
        "Share of trials flagged as drift (the `clean` column is the false-positive rate; it should be "
        f"close to alpha = {drift['alpha']}):",
        "",
        _table(["detector", *(f"`{d}`" for d in drifts), "ms/test"], detector_rows),
        "",
        "![detection rate](detection_rate.png)",
        "",
        "## Reproduce",
        "",
        "```bash",
        "export DVC_NO_ANALYTICS=1",
        *([] if params.dataset == "digits" else [
            "# offline: serve a copy of the archive and name it (the environment wins over params.yaml)",
            "export ZEAL_IMAGENETTE_URL=http://127.0.0.1:8765/imagenette2-160.tgz",
            "export ZEAL_IMAGENETTE_MD5=<the copy's md5>",
        ]),
        f"dvc exp run -S dataset={params.dataset}",
        "dvc metrics show && dvc plots show",
        "```",
        "",
    ]
    atomic_write_text(paths.report_md, "\n".join(lines))
    return paths.report_md


# ---------------------------------------------------------------------------------------------------------
# Stages.


def _use_folders(paths: StagePaths, params_file: Path) -> None:
    """Point the library's data/models folders at the stage folders, for this process only."""
    os.environ["ZEAL_DATA_DIR"] = str(paths.prepared.resolve())
    os.environ["ZEAL_MODELS_DIR"] = str(paths.models.resolve())
    os.environ["ZEAL_PARAMS"] = str(params_file.resolve())


def _progress_printer(event: Any) -> None:
    from zeal_core.cli import stderr_progress

    stderr_progress(event)


def stage_download(params: PipelineParams, paths: StagePaths) -> dict[str, Any]:
    """Fetch the raw source into ``paths.raw``: the verified Imagenette archive, or a note for digits."""
    paths.raw.mkdir(parents=True, exist_ok=True)
    if params.dataset == "digits":
        import sklearn

        source = {"dataset": "digits", "source": "sklearn.datasets.load_digits (embedded, no download)",
                  "sklearn": sklearn.__version__}
    else:
        from zeal_core.data.imagenette import download_imagenette
        from zeal_core.data.settings import imagenette_settings

        os.environ["ZEAL_DATA_DIR"] = str(paths.raw.resolve())  # download_imagenette writes into data_dir()
        settings = imagenette_settings()
        path, downloaded = download_imagenette(progress=_progress_printer)
        source = {"dataset": "imagenette", "archive": path.name, "url": settings.url, "md5": settings.md5,
                  "bytes": path.stat().st_size, "downloaded": downloaded}
    _write_json(paths.raw / "source.json", source)
    return source


def stage_prepare(params: PipelineParams, paths: StagePaths, params_file: Path) -> dict[str, Any]:
    """Decode the raw source into ``paths.prepared`` and write the dataset summary."""
    from zeal_core.data import prepare_dataset

    paths.prepared.mkdir(parents=True, exist_ok=True)
    _use_folders(paths, params_file)
    if params.dataset == "imagenette":
        from zeal_core.data.imagenette import ARCHIVE_NAME

        source = paths.raw / ARCHIVE_NAME
        target = paths.prepared / ARCHIVE_NAME
        if not target.exists():  # a hard link costs no space; prepare then only verifies it
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        os.environ["ZEAL_IMAGENETTE_URL"] = str(source.resolve())
    start = time.perf_counter()
    dataset = prepare_dataset(params.dataset, progress=_progress_printer)
    info = dataset.info()
    info.pop("class_counts", None)
    info["seconds"] = round(time.perf_counter() - start, 2)
    _write_json(paths.prepared / "info.json", info)
    _write_json(paths.data_json, info)
    return info


def _device(params: PipelineParams) -> torch.device:
    from zeal_core.device import resolve_device

    if params.threads > 0:
        torch.set_num_threads(params.threads)
    return resolve_device(params.device)


def stage_train(params: PipelineParams, paths: StagePaths, params_file: Path) -> dict[str, Any]:
    """Train a fresh model into ``paths.models`` (emptied first) and record its version."""
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.train import TrainConfig, default_config, train_and_register

    _use_folders(paths, params_file)
    device = _device(params)
    base = default_config(params.dataset, gpu=device.type == "cuda")
    overrides = dict(params.train)
    unknown = sorted(set(overrides) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"{params_file}: train.{params.dataset} has unknown setting(s) {unknown}; known: "
                          f"{sorted(TrainConfig.__dataclass_fields__)}")
    overrides.setdefault("seed", params.seed)
    config = TrainConfig.from_dict({**base.to_dict(), **overrides})
    config.validate()
    if paths.models.exists():  # the stage output holds exactly one model: the one trained now
        shutil.rmtree(paths.models)
    paths.models.mkdir(parents=True)
    registry = ModelRegistry(root=paths.models)
    start = time.perf_counter()
    card = train_and_register(params.dataset, config, device=device, progress=_progress_printer,
                              registry=registry, notes="dvc pipeline")
    metrics = {key: value for key, value in card.metrics.items() if key != "history"}
    result = {
        "version": card.version,
        "dataset": card.dataset,
        "dataset_fingerprint": card.dataset_fingerprint,
        "val_accuracy": metrics.get("val_accuracy", metrics.get("accuracy")),
        "seconds": round(time.perf_counter() - start, 2),
        "recipe": card.recipe,
        "metrics": metrics,
        "machine": machine_description(device),
    }
    registry.set_active(card.version)  # the registry's own pointer (active.json) names the stage's model
    _write_json(paths.train_json, result)
    return result


def _load_model(paths: StagePaths, params: PipelineParams, device: torch.device) -> tuple[Any, Any]:
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry(root=paths.models)
    version = registry.get_active()
    if version is None:
        raise ConfigError(f"{paths.models} names no active model: run the train stage (dvc repro train)")
    return registry.load(version, device=device)


def stage_evaluate(params: PipelineParams, paths: StagePaths, params_file: Path) -> dict[str, Any]:
    """Write the robustness table (CSV for plots) and its summary (JSON metrics)."""
    from zeal_core.corruptions import list_corruptions
    from zeal_core.data import load_dataset

    _use_folders(paths, params_file)
    device = _device(params)
    model, card = _load_model(paths, params, device)
    images, labels = load_dataset(params.dataset).split("val")
    images, labels = _val_subset(images, labels, params.evaluate.max_images, params.seed)
    corruptions = list(params.evaluate.corruptions) or list_corruptions()
    table = robustness_table(model, card.model_config, images, labels, corruptions,
                             params.evaluate.severities, device=device, seed=params.seed,
                             batch_size=params.evaluate.batch_size, resize_first=params.evaluate.resize_first,
                             progress=_progress_printer)
    metrics = {"version": card.version, **table.metrics()}
    _write_csv(paths.robustness_csv, ["corruption", "severity", "accuracy", "error"],
               [[name, f"{severity:g}", f"{accuracy:.4f}", f"{1 - accuracy:.4f}"]
                for name, severity, accuracy in table.rows])
    _write_json(paths.robustness_json, metrics)
    return metrics


def stage_drift_eval(params: PipelineParams, paths: StagePaths, params_file: Path) -> dict[str, Any]:
    """Write the detector table (CSV for plots) and per-detector summary (JSON metrics)."""
    from zeal_core.data import load_dataset

    _use_folders(paths, params_file)
    device = _device(params)
    model, card = _load_model(paths, params, device)
    images, _ = load_dataset(params.dataset).split("val")
    table = detector_table(model, card.model_config, images, params.drift_eval, device=device,
                           seed=params.seed, progress=_progress_printer)
    metrics = {"version": card.version, **table.metrics()}
    _write_csv(paths.drift_csv, ["detector", "drift", "corruption", "severity", "detection_rate",
                                 "median_p_value", "mean_runtime_s", "trials"],
               [[row.detector, row.drift, row.corruption, f"{row.severity:g}", f"{row.detection_rate:.4f}",
                 f"{row.median_p_value:.4g}", f"{row.mean_runtime_s:.4g}", row.trials] for row in table.rows])
    _write_json(paths.drift_json, metrics)
    return metrics


def stage_report(params: PipelineParams, paths: StagePaths, params_file: Path) -> dict[str, Any]:
    """Write ``report.md`` and the PNG plots."""
    path = write_report(paths, params)
    return {"report": str(path)}


def run_stage(stage: str, params_file: Path | str = "params.yaml", root: Path | str = ".") -> dict[str, Any]:
    """Run one pipeline stage with the parameters in ``params_file``; returns its JSON-ready summary.

    Raises:
        ConfigError: Unknown stage or bad parameters.
    """
    params_file = Path(params_file)
    params = load_params(params_file)
    paths = StagePaths.for_dataset(params.dataset, root)
    paths.reports.mkdir(parents=True, exist_ok=True)
    if stage == "download":
        return stage_download(params, paths)
    handlers = {"prepare": stage_prepare, "train": stage_train, "evaluate": stage_evaluate,
                "drift-eval": stage_drift_eval, "report": stage_report}
    if stage not in handlers:
        raise ConfigError(f"unknown pipeline stage {stage!r}: choose one of {list(STAGES)}")
    return handlers[stage](params, paths, params_file)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zeal_core.pipeline <stage> [--params FILE]``: run one stage, print its JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m zeal_core.pipeline",
                                     description="Run one stage of the DVC pipeline (see dvc.yaml).")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--root", default=".", help="project folder the stage paths are relative to")
    args = parser.parse_args(argv)
    try:
        result = run_stage(args.stage, args.params, args.root)
    except ZealError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
