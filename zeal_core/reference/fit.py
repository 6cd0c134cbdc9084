"""``fit_reference``: load a registered model and its dataset, embed the clean reference, fit everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeal_core.device import resolve_device
from zeal_core.embed import compute_embeddings, part_positions
from zeal_core.errors import ConfigError
from zeal_core.progress import ProgressCallback, report
from zeal_core.reference.config import ReferenceConfig
from zeal_core.reference.fitted import FittedReference, ModelSource


def fit_reference(version: str, dataset: str | Any | None = None, config: ReferenceConfig | None = None, *,
                  device: str | torch.device = "auto", registry: Any = None,
                  progress: ProgressCallback | None = None,
                  bank_folder: Path | None = None) -> FittedReference:
    """Fit a reference for ``version`` on the clean held-out half of its dataset's validation split.

    The split is cut into two fixed disjoint halves (``zeal_core.embed.part_positions``): the reference is
    drawn from the "reference" half, simulated samples from the "sample" half, so a clean sample is a fair
    no-drift case. The whole split is embedded once (clean); the reference is a seeded draw of
    ``config.reference_n`` of its half (all of it by default), restricted to the classes the model knows.

    Args:
        version: A model version, or "active"/"latest".
        dataset: Dataset name or ``ImageDataset``; default the model's.
        config: Reference size, seed, alpha, detectors.
        device: Where the model runs.
        registry: The model registry; default the one in ``models_dir()``.
        progress: Receives ``reference`` events.
        bank_folder: Where the shift bank of the label-free parts is kept between processes.

    Raises:
        ConfigError: A reference size larger than the reference half. ModelError / DataError: the model or
            dataset cannot be loaded, or they do not fit each other.
    """
    from zeal_core.data import shared_dataset
    from zeal_core.models.registry import ModelRegistry, label_map

    config = config or ReferenceConfig()
    registry = registry if registry is not None else ModelRegistry()
    device = resolve_device(device)
    resolved = registry.resolve(version)
    report(progress, "reference", 0, 3, f"loading {resolved}")
    model, card = registry.load(resolved, device=device)
    data = shared_dataset(dataset or card.dataset) if dataset is None or isinstance(dataset, str) else dataset
    mapping = label_map(card, data.class_names)
    images, dataset_labels = data.split(config.split)
    split_labels = dataset_labels.numpy().astype(np.int64)
    report(progress, "reference", 1, 3, f"embedding {images.shape[0]:,} clean {config.split} images")
    clean = compute_embeddings(model, card.model_config, images.to(device), device,
                               labels=mapping[split_labels], batch_size=config.batch_size)
    reference_positions = _reference_positions(split_labels, mapping, config)
    source = ModelSource(model=model, card=card, device=device, dataset=data, label_map=mapping,
                         split_images=images, split_labels=split_labels, split_clean=clean,
                         pool=part_positions(images.shape[0], "sample"))
    report(progress, "reference", 2, 3, f"fitting detectors on {len(reference_positions):,} images")
    reference = clean.subset(reference_positions)  # rows of ``clean`` are split positions
    fitted = FittedReference(reference, config, dataset_name=data.name, version=resolved, source=source,
                             bank_folder=bank_folder)
    report(progress, "reference", 3, 3, "reference ready")
    return fitted


def _reference_positions(split_labels: np.ndarray, mapping: np.ndarray,
                         config: ReferenceConfig) -> np.ndarray:
    """Sorted split positions of the reference: a seeded draw from the reference half's known classes."""
    half = part_positions(len(split_labels), "reference")
    known = half[mapping[split_labels[half]] >= 0]
    size = len(known) if config.reference_n is None else config.reference_n
    if not 2 <= size <= len(known):
        raise ConfigError(f"reference_n = {size}: the reference half holds {len(known)} images of the "
                          f"model's classes; use 2 <= reference_n <= {len(known)}")
    if size == len(known):
        return known
    return np.sort(np.random.default_rng(config.seed).choice(known, size=size, replace=False))
