"""The stages of ``dvc.yaml``: one function each, registered by name in one table.

A stage takes a ``StageRun`` (the checked parameters, the stage paths, the params file) and returns a
JSON-ready summary; ``run_stage`` looks it up by name. Adding a stage is a function with
``@register_stage("name")`` here plus its entry in ``dvc.yaml``. Stages pass their folders to the library as
arguments (the data folder as ``root``, the model registry's ``root``, the params file as ``params_file``):
none of them changes the process's environment.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeal_core.errors import ConfigError, DataError
from zeal_core.pipeline.params import PipelineParams, load_params, train_config
from zeal_core.pipeline.paths import StagePaths
from zeal_core.pipeline.report import (
    machine_description,
    write_detector_table,
    write_json,
    write_report,
    write_robustness_table,
)
from zeal_core.plugins import Registry
from zeal_core.progress import ProgressEvent
from zeal_core.sampling import seeded_subset

__all__ = ["STAGES", "StageRun", "list_stages", "register_stage", "run_stage"]


@dataclass(frozen=True)
class StageRun:
    """What every stage is given."""

    params: PipelineParams  # the checked parameters
    paths: StagePaths  # where the stages read and write, for this dataset
    params_file: Path  # the file the parameters came from (absolute); the data layer reads its data: section


Stage = Callable[[StageRun], dict[str, Any]]

_STAGES: Registry[Stage] = Registry("pipeline stage")


def register_stage(name: str) -> Callable[[Stage], Stage]:
    """Decorator: register a stage function under ``name`` (the name ``dvc.yaml``'s command uses)."""

    def decorate(function: Stage) -> Stage:
        return _STAGES.add(name, function)

    return decorate


def list_stages() -> list[str]:
    """Stage names in pipeline order."""
    return _STAGES.names()


def run_stage(stage: str, params_file: Path | str = "params.yaml", root: Path | str = ".") -> dict[str, Any]:
    """Run one pipeline stage with the parameters in ``params_file``; returns its JSON-ready summary.

    Args:
        stage: A name from ``list_stages()``.
        params_file: The parameters (``params.yaml``).
        root: The project folder the stage paths are relative to.

    Raises:
        ConfigError: Unknown stage (the message lists them) or bad parameters.
    """
    function = _STAGES.get(stage)
    params_file = Path(params_file).resolve()
    params = load_params(params_file)
    paths = StagePaths.for_dataset(params.dataset, root)
    paths.reports.mkdir(parents=True, exist_ok=True)
    return function(StageRun(params=params, paths=paths, params_file=params_file))


def _progress_printer(event: ProgressEvent) -> None:
    from zeal_core.cli import stderr_progress

    stderr_progress(event)


def _device(params: PipelineParams) -> torch.device:
    from zeal_core.device import resolve_device

    if params.threads > 0:
        torch.set_num_threads(params.threads)
    return resolve_device(params.device)


def _load_model(paths: StagePaths, device: torch.device) -> tuple[Any, Any]:
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry(root=paths.models)
    version = registry.get_active()
    if version is None:
        raise ConfigError(f"{paths.models} names no active model: run the train stage (dvc repro train)")
    return registry.load(version, device=device)


def _dataset(run: StageRun) -> Any:
    """The prepared dataset of this run's profile."""
    from zeal_core.data import load_dataset

    return load_dataset(run.params.dataset, root=run.paths.prepared, params_file=run.params_file)


def _val_split(run: StageRun, max_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prepared validation split, cut to a seeded subset of ``max_images`` (0 = all)."""
    images, labels = _dataset(run).split("val")
    keep = seeded_subset(images.shape[0], max_images, run.params.seed)
    return images[keep], labels[keep]


# ---------------------------------------------------------------------------------------------------------
# The stages, in pipeline order.


@register_stage("download")
def stage_download(run: StageRun) -> dict[str, Any]:
    """Fetch the raw source into ``paths.raw``: the verified Imagenette archive, or a note for digits."""
    run.paths.raw.mkdir(parents=True, exist_ok=True)
    if run.params.dataset == "digits":
        import sklearn

        source = {"dataset": "digits", "source": "sklearn.datasets.load_digits (embedded, no download)",
                  "sklearn": sklearn.__version__}
    else:
        from zeal_core.data.imagenette import download_imagenette
        from zeal_core.data.settings import imagenette_settings

        settings = imagenette_settings(params_file=run.params_file)
        path, downloaded = download_imagenette(progress=_progress_printer, root=run.paths.raw,
                                               params_file=run.params_file)
        source = {"dataset": "imagenette", "archive": path.name, "url": settings.url, "md5": settings.md5,
                  "bytes": path.stat().st_size, "downloaded": downloaded}
    write_json(run.paths.raw / "source.json", source)
    return source


def _link_archive(run: StageRun) -> None:
    """Put the downloaded archive into the prepared folder (a hard link costs no space) and check its md5,
    so that preparing never downloads: a missing or wrong archive means the download stage must run."""
    from zeal_core.data.download import file_md5
    from zeal_core.data.imagenette import ARCHIVE_NAME, archive_path
    from zeal_core.data.settings import imagenette_settings

    source, target = run.paths.raw / ARCHIVE_NAME, archive_path(run.paths.prepared)
    if not source.is_file():
        raise DataError(f"{source} is missing: run the download stage first (dvc repro download)")
    if target.exists() and not os.path.samefile(source, target):
        target.unlink()  # a copy of an older archive
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    md5 = imagenette_settings(params_file=run.params_file).md5
    if file_md5(target) != md5:
        raise DataError(f"{source} does not match md5 {md5}: run the download stage again "
                        "(dvc repro download)")


@register_stage("prepare")
def stage_prepare(run: StageRun) -> dict[str, Any]:
    """Decode the raw source into ``paths.prepared`` and write the dataset summary."""
    from zeal_core.data import prepare_dataset

    run.paths.prepared.mkdir(parents=True, exist_ok=True)
    if run.params.dataset == "imagenette":
        _link_archive(run)
    start = time.perf_counter()
    dataset = prepare_dataset(run.params.dataset, progress=_progress_printer, root=run.paths.prepared,
                              params_file=run.params_file)
    info = dataset.info()
    info.pop("class_counts", None)
    info["seconds"] = round(time.perf_counter() - start, 2)
    write_json(run.paths.prepared / "info.json", info)
    write_json(run.paths.data_json, info)
    return info


@register_stage("train")
def stage_train(run: StageRun) -> dict[str, Any]:
    """Train a fresh model into ``paths.models`` (emptied first) and record its version."""
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.train import train_and_register

    device = _device(run.params)
    config = train_config(run.params, run.params_file, gpu=device.type == "cuda")
    if run.paths.models.exists():  # the stage output holds exactly one model: the one trained now
        shutil.rmtree(run.paths.models)
    run.paths.models.mkdir(parents=True)
    registry = ModelRegistry(root=run.paths.models)
    start = time.perf_counter()
    card = train_and_register(run.params.dataset, config, device=device, progress=_progress_printer,
                              registry=registry, notes="dvc pipeline", data_root=run.paths.prepared,
                              data_params_file=run.params_file)
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
    write_json(run.paths.train_json, result)
    return result


@register_stage("evaluate")
def stage_evaluate(run: StageRun) -> dict[str, Any]:
    """Write the robustness table (CSV for plots) and its summary (JSON metrics)."""
    from zeal_core.corruptions import list_drift_kinds
    from zeal_core.robustness import robustness_table

    settings = run.params.evaluate
    device = _device(run.params)
    model, card = _load_model(run.paths, device)
    images, labels = _val_split(run, settings.max_images)
    table = robustness_table(model, card.model_config, images, labels,
                             list(settings.corruptions) or list_drift_kinds(), settings.severities,
                             device=device, seed=run.params.seed, batch_size=settings.batch_size,
                             resize_first=settings.resize_first, progress=_progress_printer)
    return write_robustness_table(run.paths, card.version, table)


@register_stage("drift-eval")
def stage_drift_eval(run: StageRun) -> dict[str, Any]:
    """Write the detector table (CSV for plots) and per-detector summary (JSON metrics).

    Every detector runs with the settings of the standard check profile (``zeal_core.service``), so the
    table measures the detectors exactly as ``check``, the pages and the monitor run them; params.yaml
    chooses the detectors, drifts, sizes, trials and alpha of the study.
    """
    from dataclasses import replace

    from zeal_core.reference.grid import detector_table
    from zeal_core.service import get_profile

    device = _device(run.params)
    model, card = _load_model(run.paths, device)
    dataset = _dataset(run)
    images, labels = dataset.split("val")  # detector_table takes its own seeded subset
    grid = replace(run.params.drift_eval.grid_config(), detector_options=get_profile().detector_options())
    table = detector_table(model, card.model_config, images, grid,
                           labels=labels, class_names=dataset.class_names, device=device,
                           seed=run.params.seed, progress=_progress_printer)
    return write_detector_table(run.paths, card.version, table)


@register_stage("report")
def stage_report(run: StageRun) -> dict[str, Any]:
    """Write ``report.md`` and the PNG plots."""
    return {"report": str(write_report(run.paths, run.params))}


STAGES = tuple(list_stages())  # the built-in stages, in the order dvc.yaml runs them
