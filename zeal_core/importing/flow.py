"""Bring your own model: turn a checkpoint made elsewhere into a registry version the whole lab can use.

``import_checkpoint`` reads the file without running anything in it (``zeal_core.models.checkpoint``),
checks it against a timm architecture and a dataset's classes, optionally fits a new classifier
(``zeal_core.importing.head``), evaluates it on the dataset's val split and saves it with a card that
records where it came from (file name, sha256, the wrapper key and prefixes removed), its classes,
normalisation, input size and metrics (``strategy="import"``). Every check runs before the registry is
touched, so bad input leaves no version and no file behind.

Defaults, when an option is not given: a ``.safetensors`` file exported by this lab carries its arch, input
size, normalisation and class list in its metadata, and those are used; otherwise the input size is the
dataset's working size (32 px digits, 160 px Imagenette) and the normalisation is the timm default of the
architecture (ImageNet's mean and std for the ResNets).

This flow needs models, data, evaluation and embeddings, so it lives above all of them (``models`` imports
none of these).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm  # noqa: F401 - imported here, so its ~5 s first import is not counted as "build" time
import torch
from torch import nn

from zeal_core.data import load_dataset
from zeal_core.device import describe_device, resolve_device
from zeal_core.errors import ConfigError
from zeal_core.evaluate import evaluate
from zeal_core.importing.head import fit_linear_head
from zeal_core.models.checkpoint import Checkpoint, check_finite, check_fit, load_fitted, read_checkpoint
from zeal_core.models.factory import ModelConfig, build_model
from zeal_core.models.importer import LabMetadata, checked_config, default_normalisation, lab_metadata
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    from zeal_core.data import ImageDataset
    from zeal_core.models.registry import ModelCard, ModelRegistry

IMPORT_STRATEGY = "import"  # the card's strategy for an imported model


class _Stopwatch:
    """Seconds per named stage (a stage may be entered more than once; its times add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

    def summary(self) -> dict[str, float]:
        return {**{name: round(value, 4) for name, value in self.seconds.items()},
                "total": round(time.perf_counter() - self.start, 4)}


def import_checkpoint(
    source: str | Path | bytes,
    *,
    arch: str | None = None,
    dataset: str,
    image_size: int | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    reset_head: bool = False,
    mean: tuple[float, float, float] | list[float] | None = None,
    std: tuple[float, float, float] | list[float] | None = None,
    entry: str | None = None,
    filename: str | None = None,
    registry: ModelRegistry | None = None,
    device: torch.device | str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ModelCard:
    """Import a checkpoint as a new registry version, evaluated on ``dataset``'s val split.

    Args:
        source: The checkpoint's path, or its bytes (an upload; give ``filename`` then).
        arch: timm architecture name, e.g. ``"resnet18"``; may be left out for a file this lab exported.
        dataset: Dataset name (``load_dataset``) whose classes the model predicts.
        image_size: Input side in px the model expects; default the file's metadata, else the dataset's size.
        class_names: The model's own classes in output order, when they are not the dataset's classes in
            its order (they must be classes of the dataset); stored in the card's ``class_names``.
        reset_head: Replace the classifier with a new one for the dataset's (or ``class_names``') classes,
            fitted on the train split with the rest of the network frozen (``zeal_core.importing.head``).
        mean: Per-channel input mean in [0, 1] pixel units; default the metadata's, else timm's for ``arch``.
        std: Per-channel input std, likewise.
        entry: The checkpoint key holding the weights, when the common wrapper keys are not it.
        filename: The file's name when ``source`` is bytes.
        registry: Where the version is saved; default ``ModelRegistry()``.
        device: Where the model is evaluated (and its new head's features computed).
        progress: Receives ``import``, ``head`` and ``evaluate`` events.
        cancel: Checked between stages and evaluation batches; nothing is saved when it is set.

    Returns:
        The new version's card; ``metrics["import_seconds"]`` splits the time into stages.

    Raises:
        ModelError: The file is unreadable, holds code or objects, is damaged, holds non-finite weights, or
            does not fit the architecture or the classes. ConfigError: a bad option. DataError: an unknown
            dataset or class name. Cancelled: ``cancel`` was set.
    """
    clock = _Stopwatch()
    name = Path(filename).name if isinstance(source, bytes) and filename else Path(str(source)).name
    report(progress, "import", 0, None, message=f"reading {name}")
    with clock.stage("read"):
        checkpoint = read_checkpoint(source, filename=filename, entry=entry)
    check_cancel(cancel)
    with clock.stage("check"):
        check_finite(checkpoint)
        saved = lab_metadata(checkpoint)
    with clock.stage("data"):
        names = tuple(class_names) if class_names else saved.class_names
        data = load_dataset(dataset)
        classes = data.with_classes(names) if names else data
    options = _Options(arch or (saved.model_config.arch if saved.model_config else None), image_size, mean,
                       std, reset_head)
    built = _build_and_load(checkpoint, saved, classes, options, resolve_device(device), clock, progress)
    check_cancel(cancel)
    head = None
    if built.plan.reset_head:
        with clock.stage("head"):
            train_images, train_labels = classes.split("train")
            head = fit_linear_head(built.model, built.config, train_images, train_labels, built.device,
                                   progress=progress, cancel=cancel)
    report(progress, "import", 0, None, message=f"evaluating on the val split of {dataset}")
    with clock.stage("evaluate"):
        val_images, val_labels = classes.split("val")
        result = evaluate(built.model, built.config, val_images, val_labels, built.device,
                          classes.class_names, progress=progress, cancel=cancel)
    check_cancel(cancel)
    metrics: dict[str, Any] = {"val_accuracy": result.accuracy,
                               "val_per_class_accuracy": result.per_class_accuracy, "val_n": result.n,
                               "device": describe_device(built.device)}
    card = _save(built, checkpoint, saved, classes, head, metrics, clock, registry, dataset, names)
    report(progress, "import", 1, 1, message=f"imported {checkpoint.name} as {card.version}: val accuracy "
                                             f"{result.accuracy:.1%}")
    return card


@dataclass(frozen=True)
class _Options:
    """What the caller asked for; None: take it from the file's metadata or the default."""

    arch: str | None  # timm architecture name
    image_size: int | None  # input side, px
    mean: Any  # per-channel input mean
    std: Any  # per-channel input std
    reset_head: bool  # fit a new classifier


@dataclass(frozen=True)
class _Built:
    """The checked model with the checkpoint's weights, and how it was made."""

    model: nn.Module  # on ``device``, in eval mode
    config: ModelConfig  # arch, classes, input size, normalisation
    plan: Any  # ``check_fit``'s plan: head kept or new, prefixes stripped, conversions
    sources: dict[str, str]  # where each default came from: "option", "file metadata" or "default"
    device: torch.device  # where the model is


def _build_and_load(checkpoint: Checkpoint, saved: LabMetadata, classes: ImageDataset, options: _Options,
                    device: torch.device, clock: _Stopwatch, progress: ProgressCallback | None) -> _Built:
    """Build the architecture for the dataset's classes, check the checkpoint fits it and load it."""
    if not options.arch:
        raise ConfigError(f"name the architecture of {checkpoint.name} (--arch, a timm model name such as "
                          "resnet18): the file does not say")
    sources: dict[str, str] = {}
    saved_config = saved.model_config
    size = _pick(options.image_size, saved_config and saved_config.image_size, classes.image_size,
                 "image_size", sources)
    with clock.stage("build"):
        config = checked_config(ModelConfig(arch=options.arch, num_classes=classes.num_classes,
                                            image_size=size))
        model, _ = build_model(config)
    arch_mean, arch_std = default_normalisation(model)
    config = replace(config,
                     mean=_pick(options.mean, saved_config and saved_config.mean, arch_mean, "mean", sources),
                     std=_pick(options.std, saved_config and saved_config.std, arch_std, "std", sources))
    report(progress, "import", 0, None, message=f"checking {checkpoint.name} against {options.arch} with "
                                                f"{classes.num_classes} classes")
    with clock.stage("check"):
        plan = check_fit(checkpoint, model, arch=options.arch, num_classes=classes.num_classes,
                         reset_head=options.reset_head)
    if plan.converted:  # harmless (float16 -> float32), but said: a warning on the way, a line in the notes
        report(progress, "import", 0, None, message=f"warning: {checkpoint.name}: weights converted on "
                                                    f"loading ({'; '.join(plan.converted)})")
    with clock.stage("build"):
        load_fitted(model, checkpoint, plan)
        model.to(device).eval()
    return _Built(model=model, config=config, plan=plan, sources=sources, device=device)


def _save(built: _Built, checkpoint: Checkpoint, saved: LabMetadata, classes: ImageDataset,
          head: dict[str, Any] | None, metrics: dict[str, Any], clock: _Stopwatch,
          registry: ModelRegistry | None, dataset: str, names: tuple[str, ...] | None) -> ModelCard:
    """Save the imported model with its provenance (recipe), notes and metrics as a new version."""
    from zeal_core.models.registry import ModelRegistry

    plan = built.plan
    recipe = {"import": {**checkpoint.describe(), "arch": built.config.arch,
                         "stripped_name_prefix": plan.stripped_prefix, "file_classes": plan.file_classes,
                         "head": "new" if plan.reset_head else "kept", "head_fit": head,
                         "defaults_from": built.sources, "exported_from": saved.version}}
    notes = _notes(checkpoint, plan, head, built.sources, saved, classes.image_size)
    registry = registry if registry is not None else ModelRegistry()
    with clock.stage("save"):
        metrics["import_seconds"] = clock.summary()
        metrics["seconds"] = metrics["import_seconds"]["total"]
        return registry.save(built.model, model_config=built.config, dataset=dataset,
                             dataset_fingerprint=classes.fingerprint, recipe=recipe, metrics=metrics,
                             strategy=IMPORT_STRATEGY, notes=notes, class_names=names)


def _pick(given: Any, saved: Any, default: Any, what: str, sources: dict[str, str]) -> Any:
    """The option given, else the file's metadata, else the default; records which in ``sources``."""
    for value, where in ((given, "option"), (saved, "file metadata"), (default, "default")):
        if value is not None and value != ():
            sources[what] = where
            return tuple(value) if isinstance(value, list) else value
    raise ConfigError(f"no value for {what}")


def _notes(checkpoint: Checkpoint, plan: Any, head: dict[str, Any] | None, sources: dict[str, str],
           saved: LabMetadata, dataset_size: int) -> str:
    """The card's notes: what the import did that a reader should know."""
    lines = [f"imported from {checkpoint.name} (sha256 {checkpoint.sha256[:12]}...)"]
    if checkpoint.entry:
        lines.append(f"weights taken from the checkpoint's {checkpoint.entry!r} entry")
    prefixes = [*checkpoint.stripped_prefixes, *([plan.stripped_prefix] if plan.stripped_prefix else [])]
    if prefixes:
        lines.append(f"name prefixes removed: {', '.join(prefixes)}")
    if plan.converted:
        lines.append(f"weights converted on loading: {'; '.join(plan.converted)}")
    if saved.version:
        lines.append(f"exported by this lab from version {saved.version}")
    if sources.get("image_size") == "default":
        lines.append(f"input size not given: evaluated at {dataset_size} px, the dataset's size (give "
                     "--image-size if the model was trained at another size)")
    if head is not None:
        lines.append(f"new classifier fitted on {head['train_n']} training images with the network frozen "
                     f"(train accuracy {head['train_accuracy']:.1%})")
    return "; ".join(lines)


