"""Bring your own model: turn a checkpoint made elsewhere into a registry version the whole lab can use.

``import_checkpoint`` reads the file without running anything in it (``zeal_core.models.checkpoint``),
checks it against a timm architecture and a dataset's classes, optionally fits a new classifier
(``zeal_core.models.head``), evaluates it on the dataset's val split and saves it with a card that records
where it came from (file name, sha256, the wrapper key and prefixes removed), its classes, normalisation,
input size and metrics (``strategy="import"``). Every check runs before the registry is touched, so bad
input leaves no version and no file behind.

``init_from_checkpoint`` reads a checkpoint the same way for ``train --init`` (fine-tuning from it).

Defaults, when an option is not given: a ``.safetensors`` file exported by this lab carries its arch, input
size, normalisation and class list in its metadata, and those are used; otherwise the input size is the
dataset's working size (32 px digits, 160 px Imagenette) and the normalisation is the timm default of the
architecture (ImageNet's mean and std for the ResNets).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm  # noqa: F401 - imported here, so its ~5 s first import is not counted as "build" time
import torch
from torch import nn

from zeal_core.errors import ConfigError, ModelError
from zeal_core.models.checkpoint import (
    METADATA_CLASS_NAMES,
    METADATA_MODEL_CONFIG,
    METADATA_VERSION,
    Checkpoint,
    check_finite,
    check_fit,
    load_fitted,
    read_checkpoint,
)
from zeal_core.models.factory import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, build_model
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    from zeal_core.models.registry import ModelCard, ModelRegistry

IMPORT_STRATEGY = "import"  # the card's strategy for an imported model


@dataclass(frozen=True)
class LabMetadata:
    """What a checkpoint exported by this lab says about itself (all None for other files)."""

    model_config: ModelConfig | None  # arch, input size and normalisation it was used with
    class_names: tuple[str, ...] | None  # its outputs in order; None: the dataset's classes
    version: str | None  # the version id it was exported from


def lab_metadata(checkpoint: Checkpoint) -> LabMetadata:
    """The lab's export metadata in a safetensors header; metadata that does not parse is ignored."""
    text = checkpoint.metadata.get(METADATA_MODEL_CONFIG)
    if not text:
        return LabMetadata(None, None, None)
    try:
        config = ModelConfig.from_dict(json.loads(text))
        names = json.loads(checkpoint.metadata.get(METADATA_CLASS_NAMES, "null"))
        classes = tuple(str(name) for name in names) if isinstance(names, list) else None
    except (ValueError, TypeError):
        return LabMetadata(None, None, None)
    return LabMetadata(config, classes, checkpoint.metadata.get(METADATA_VERSION))


def default_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The architecture's timm default mean and std (ImageNet's when timm names none)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    return (tuple(mean), tuple(std)) if len(mean) == 3 and len(std) == 3 else (IMAGENET_MEAN, IMAGENET_STD)


def _checked_config(config: ModelConfig) -> ModelConfig:
    """``config`` after the bounds checks a card gets (input size, class count)."""
    try:
        return ModelConfig.from_dict(config.to_dict())
    except ValueError as error:
        raise ConfigError(str(error)) from error


def server_checkpoint_path(text: str) -> Path:
    """A checkpoint path typed into a page, resolved, and kept inside ``ZEAL_FOLDER_ROOTS`` when set.

    A shared server sets ``ZEAL_FOLDER_ROOTS`` so that users cannot make it read files elsewhere on its
    disk (the same rule as ``folder:PATH`` datasets).

    Raises:
        ModelError: No path, or one outside the allowed folders.
    """
    from zeal_core.data.folder import ROOTS_VARIABLE, allowed_folder_roots

    if not text.strip():
        raise ModelError("no checkpoint path given: type the path of a .safetensors or .pth file")
    path = Path(text.strip()).expanduser().resolve()
    allowed = allowed_folder_roots()
    if allowed and not any(root in path.parents for root in allowed):
        raise ModelError(f"checkpoint {path} is outside the folders this server may read "
                         f"({', '.join(map(str, allowed))}, set by {ROOTS_VARIABLE}): put it there, or "
                         "upload it")
    return path


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
            fitted on the train split with the rest of the network frozen (``zeal_core.models.head``).
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
    from zeal_core.data import load_dataset
    from zeal_core.device import describe_device, resolve_device
    from zeal_core.evaluate import evaluate
    from zeal_core.models.head import fit_linear_head
    from zeal_core.models.registry import ModelRegistry

    clock = _Stopwatch()
    name = Path(filename).name if isinstance(source, bytes) and filename else Path(str(source)).name
    report(progress, "import", 0, None, message=f"reading {name}")
    with clock.stage("read"):
        checkpoint = read_checkpoint(source, filename=filename, entry=entry)
    check_cancel(cancel)
    with clock.stage("check"):
        check_finite(checkpoint)
        saved = lab_metadata(checkpoint)
    arch = arch or (saved.model_config.arch if saved.model_config else None)
    if not arch:
        raise ConfigError(f"name the architecture of {checkpoint.name} (--arch, a timm model name such as "
                          "resnet18): the file does not say")
    with clock.stage("data"):
        data = load_dataset(dataset)
        names = tuple(class_names) if class_names else saved.class_names
        classes = data.with_classes(names) if names else data
    device = resolve_device(device)
    sources: dict[str, str] = {}
    size = _pick(image_size, saved.model_config and saved.model_config.image_size, classes.image_size,
                 "image_size", sources)
    with clock.stage("build"):
        config = _checked_config(ModelConfig(arch=arch, num_classes=classes.num_classes, image_size=size))
        model, _ = build_model(config)
    arch_mean, arch_std = default_normalisation(model)
    saved_config = saved.model_config
    config = replace(config,
                     mean=_pick(mean, saved_config and saved_config.mean, arch_mean, "mean", sources),
                     std=_pick(std, saved_config and saved_config.std, arch_std, "std", sources))
    report(progress, "import", 0, None, message=f"checking {checkpoint.name} against {arch} with "
                                                f"{classes.num_classes} classes")
    with clock.stage("check"):
        plan = check_fit(checkpoint, model, arch=arch, num_classes=classes.num_classes, reset_head=reset_head)
    if plan.converted:  # harmless (float16 -> float32), but said: a warning on the way, a line in the notes
        report(progress, "import", 0, None, message=f"warning: {checkpoint.name}: weights converted on "
                                                    f"loading ({'; '.join(plan.converted)})")
    with clock.stage("build"):
        load_fitted(model, checkpoint, plan)
        model.to(device).eval()
    check_cancel(cancel)
    head = None
    if plan.reset_head:
        with clock.stage("head"):
            train_images, train_labels = classes.split("train")
            head = fit_linear_head(model, config, train_images, train_labels, device, progress=progress,
                                   cancel=cancel)
    report(progress, "import", 0, None, message=f"evaluating on the val split of {dataset}")
    with clock.stage("evaluate"):
        val_images, val_labels = classes.split("val")
        result = evaluate(model, config, val_images, val_labels, device, classes.class_names,
                          progress=progress, cancel=cancel)
    check_cancel(cancel)
    notes = _notes(checkpoint, plan, head, sources, saved, classes.image_size)
    recipe = {"import": {**checkpoint.describe(), "arch": arch, "stripped_name_prefix": plan.stripped_prefix,
                         "file_classes": plan.file_classes, "head": "new" if plan.reset_head else "kept",
                         "head_fit": head, "defaults_from": sources, "exported_from": saved.version}}
    metrics: dict[str, Any] = {"val_accuracy": result.accuracy,
                               "val_per_class_accuracy": result.per_class_accuracy, "val_n": result.n,
                               "device": describe_device(device)}
    registry = registry if registry is not None else ModelRegistry()
    with clock.stage("save"):
        metrics["import_seconds"] = clock.summary()
        metrics["seconds"] = metrics["import_seconds"]["total"]
        card = registry.save(model, model_config=config, dataset=dataset,
                             dataset_fingerprint=classes.fingerprint, recipe=recipe, metrics=metrics,
                             strategy=IMPORT_STRATEGY, notes=notes, class_names=names)
    report(progress, "import", 1, 1, message=f"imported {checkpoint.name} as {card.version}: val accuracy "
                                             f"{result.accuracy:.1%}")
    return card


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


@dataclass(frozen=True)
class InitModel:
    """A model read from a checkpoint to fine-tune from (``train --init``)."""

    model: nn.Module  # the network with the checkpoint's weights (a new classifier where it did not fit)
    model_config: ModelConfig  # arch, classes, input size and normalisation to train it with
    source: dict[str, Any]  # provenance for the card's recipe (file, sha256, entry, head kept or new)
    note: str  # one line for the card's notes


def init_from_checkpoint(source: str | Path, *, arch: str, num_classes: int, image_size: int,
                         entry: str | None = None) -> InitModel:
    """Read a checkpoint exactly as ``import_checkpoint`` does, as the starting point of training.

    A classifier that does not predict ``num_classes`` classes (e.g. an ImageNet checkpoint's 1000) is
    replaced by a fresh one, as timm does for pretrained weights with another ``num_classes``.

    Raises:
        ModelError: The same refusals as ``import_checkpoint`` (code, damage, non-finite, wrong arch).
    """
    checkpoint = read_checkpoint(source, entry=entry)
    check_finite(checkpoint)
    saved = lab_metadata(checkpoint).model_config
    config = _checked_config(ModelConfig(arch=arch, num_classes=num_classes, image_size=image_size))
    model, _ = build_model(config)
    mean, std = (saved.mean, saved.std) if saved is not None else default_normalisation(model)
    config = replace(config, mean=mean, std=std)
    plan = check_fit(checkpoint, model, arch=arch, num_classes=num_classes, reset_head=None)
    load_fitted(model, checkpoint, plan)
    head = "new" if plan.reset_head else "kept"
    note = (f"fine-tuned from {checkpoint.name} (sha256 {checkpoint.sha256[:12]}...)"
            + (f"; its {plan.file_classes}-class classifier was replaced by a new {num_classes}-class one"
               if plan.reset_head and plan.file_classes is not None else "")
            + ("; it had no classifier, a new one was made" if plan.file_classes is None else ""))
    return InitModel(model=model, model_config=config,
                     source={**checkpoint.describe(), "arch": arch, "head": head,
                             "file_classes": plan.file_classes},
                     note=note)
