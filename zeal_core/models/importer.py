"""A checkpoint made elsewhere, read as a model of this lab: the parts of an import that need only models.

What a file exported by this lab says about itself (``lab_metadata``), the architecture's default
normalisation, where a page may read a checkpoint from (``server_checkpoint_path``), and
``init_from_checkpoint``, which reads a checkpoint for ``train --init`` (fine-tuning from it). The whole
import (evaluate, new classifier, registry) is ``zeal_core.importing``, above both models and data.

Defaults, when an option is not given: a ``.safetensors`` file exported by this lab carries its arch, input
size, normalisation and class list in its metadata, and those are used; otherwise the input size is the
dataset's working size (32 px digits, 160 px Imagenette) and the normalisation is the timm default of the
architecture (ImageNet's mean and std for the ResNets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


def checked_config(config: ModelConfig) -> ModelConfig:
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
    config = checked_config(ModelConfig(arch=arch, num_classes=num_classes, image_size=image_size))
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
