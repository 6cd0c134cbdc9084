"""The pipeline's parameters: the ``params.yaml`` schema every stage reads, checked once on load.

The top-level ``dataset`` picks a profile and each stage reads its section for that dataset
(``train.<dataset>``, ``evaluate.<dataset>``, ``drift_eval.<dataset>``); ``pipeline:`` holds the settings all
stages share and ``report.machine`` names the machine. Sections are built with ``zeal_core.config.build``:
an unknown key is a ``ConfigError`` naming the file, the section and the known keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from zeal_core.config import build, override
from zeal_core.errors import ConfigError

if TYPE_CHECKING:
    from zeal_core.reference.grid import DetectorGridConfig
    from zeal_core.train import TrainConfig

__all__ = ["PIPELINE_DATASETS", "DriftEvalParams", "EvaluateParams", "PipelineParams", "load_params",
           "train_config"]

PIPELINE_DATASETS = ("digits", "imagenette")  # folder:PATH is not a pipeline source (no stable path to track)


@dataclass(frozen=True)
class EvaluateParams:
    """The robustness table: which corruptions and severities, on how many validation images."""

    corruptions: tuple[str, ...] = ()  # pixel drift kinds; empty = every one (list_drift_kinds())
    severities: tuple[float, ...] = (1, 2, 3, 4, 5)  # ImageNet-C severity levels, in (0, 5]
    max_images: int = 0  # validation images used (a seeded, class-mixed subset); 0 = all of them
    batch_size: int = 256  # images per forward pass
    resize_first: bool = True  # corrupt at the model's input size (fast on a CPU) instead of the data's size


@dataclass(frozen=True)
class DriftEvalParams:
    """The detector table: detection rate per detector and drift, and the false-positive rate."""

    detectors: tuple[str, ...] = ()  # detector names; empty = every registered detector
    # drift kinds tested (pixel kinds and class mixes), each at every severity
    corruptions: tuple[str, ...] = ("gaussian_noise", "contrast", "gaussian_blur")
    severities: tuple[float, ...] = (1, 3, 5)  # severity levels tested per corruption
    fraction: float = 1.0  # share of each sample that is corrupted (DriftSpec's @fraction)
    sample_size: int = 100  # images per tested sample
    reference_size: int = 200  # images the detectors are fitted on (disjoint from every sample)
    max_images: int = 0  # validation images used (seeded subset); trials split them afresh; 0 = all
    trials: int = 20  # samples drawn per drift (and for the clean false-positive check)
    alpha: float = 0.05  # significance level of every detector
    batch_size: int = 256  # images per forward pass when embedding

    def drift_texts(self) -> tuple[str, ...]:
        """One drift spec per (corruption, severity), with ``@fraction`` when only part is corrupted."""
        suffix = f"@{self.fraction:g}" if self.fraction < 1 else ""
        return tuple(f"{name}:{severity:g}{suffix}"
                     for name in self.corruptions for severity in self.severities)

    def grid_config(self) -> DetectorGridConfig:
        """These settings as the library's detector-grid settings (``zeal_core.reference.grid``)."""
        from zeal_core.reference.grid import DetectorGridConfig

        return DetectorGridConfig(detectors=self.detectors, drifts=self.drift_texts(),
                                  sample_size=self.sample_size, reference_size=self.reference_size,
                                  max_images=self.max_images, trials=self.trials, alpha=self.alpha,
                                  batch_size=self.batch_size)


@dataclass(frozen=True)
class PipelineParams:
    """Everything the stages read from ``params.yaml``."""

    dataset: str  # "digits" or "imagenette"
    seed: int = 0  # seeds subsets, corruptions, trials and detectors (and training unless train sets its own)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    threads: int = 0  # torch CPU threads; 0 = torch's own choice
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides on default_config(dataset)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)  # robustness table settings
    drift_eval: DriftEvalParams = field(default_factory=DriftEvalParams)  # detector table settings
    machine: str = ""  # free text naming the machine, written into the report (e.g. "2 shared CPU cores")


def _read(path: Path) -> dict[str, Any]:
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read pipeline parameters {path}: {error}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: the parameters must be a mapping of sections")
    return params


def _mapping(value: Any, where: str) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of settings")
    return value


def _profile(params: dict[str, Any], section: str, dataset: str, path: Path) -> dict[str, Any]:
    values = params.get(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: '{section}' must be a mapping with one entry per dataset")
    return _mapping(values.get(dataset), f"{path}: '{section}.{dataset}'")


def _check_whole(value: Any, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where} = {value!r}: use a whole number >= {low}")


def _check_severities(severities: tuple[Any, ...], where: str, path: Path) -> None:
    if not severities or any(not isinstance(s, int | float) or not 0 < s <= 5 for s in severities):
        raise ConfigError(f"{path}: {where}.severities = {list(severities)}: use numbers in (0, 5]")


def _evaluate_params(params: dict[str, Any], dataset: str, path: Path) -> EvaluateParams:
    where = f"evaluate.{dataset}"
    evaluate = build(EvaluateParams, _profile(params, "evaluate", dataset, path), f"{path}: {where}")
    _check_whole(evaluate.batch_size, f"{where}.batch_size")
    _check_whole(evaluate.max_images, f"{where}.max_images", low=0)
    _check_severities(evaluate.severities, where, path)
    return evaluate


def _drift_params(params: dict[str, Any], dataset: str, path: Path) -> DriftEvalParams:
    where = f"drift_eval.{dataset}"
    drift = build(DriftEvalParams, _profile(params, "drift_eval", dataset, path), f"{path}: {where}")
    for key in ("sample_size", "reference_size", "trials", "batch_size"):
        _check_whole(getattr(drift, key), f"{where}.{key}", low=2 if "size" in key else 1)
    _check_whole(drift.max_images, f"{where}.max_images", low=0)
    _check_severities(drift.severities, where, path)
    if not 0 < drift.fraction <= 1:
        raise ConfigError(f"{path}: {where}.fraction = {drift.fraction}: use a share in (0, 1]")
    if not 0 < drift.alpha < 1:
        raise ConfigError(f"{path}: {where}.alpha = {drift.alpha}: use e.g. 0.05")
    return drift


def load_params(path: Path | str = "params.yaml") -> PipelineParams:
    """Read and check the pipeline's parameters.

    Raises:
        ConfigError: The file is missing or unreadable, the dataset is not a pipeline dataset, or a setting
            is unknown or out of range (the message names the key and the file).
    """
    path = Path(path)
    params = _read(path)
    dataset = str(params.get("dataset", "digits"))
    if dataset not in PIPELINE_DATASETS:
        raise ConfigError(f"{path}: dataset = {dataset!r}; the pipeline runs on {list(PIPELINE_DATASETS)}")
    general = _mapping(params.get("pipeline"), f"{path}: 'pipeline'")
    seed, threads = general.get("seed", 0), general.get("threads", 0)
    _check_whole(seed, "pipeline.seed", low=0)
    _check_whole(threads, "pipeline.threads", low=0)
    report_section = params.get("report") or {}
    return PipelineParams(
        dataset=dataset,
        seed=seed,
        device=str(general.get("device", "auto")),
        threads=threads,
        train=dict(_profile(params, "train", dataset, path)),
        evaluate=_evaluate_params(params, dataset, path),
        drift_eval=_drift_params(params, dataset, path),
        machine=str(report_section.get("machine", "") if isinstance(report_section, dict) else ""),
    )


def train_config(params: PipelineParams, params_file: Path | str, *, gpu: bool) -> TrainConfig:
    """``default_config(dataset, gpu=gpu)`` with ``train.<dataset>`` applied strictly (seed: the pipeline's
    unless the section sets one).

    Raises:
        ConfigError: An unknown ``TrainConfig`` field (named, with the file) or an invalid recipe.
    """
    from zeal_core.train import default_config

    overrides = {"seed": params.seed, **params.train}
    config = override(default_config(params.dataset, gpu=gpu), overrides,
                      f"{params_file}: train.{params.dataset}")
    config.validate()
    return config
