"""``fit_reference``: load a registered model, then load (or fit and keep) everything its checks need.

The parts are kept on disk next to the model version (``zeal_core.reference.persist``): the clean split's
embeddings (per model and dataset), the label-free warm-up (per model and dataset, whatever the reference
size) and the profile's own fits (per check settings). A later process loads them; a changed model,
dataset or setting looks for other files and refits only what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeal_core.device import resolve_device
from zeal_core.embed import compute_embeddings, part_positions
from zeal_core.errors import ConfigError
from zeal_core.progress import ProgressCallback, report
from zeal_core.reference.config import ReferenceConfig
from zeal_core.reference.fitted import FittedReference
from zeal_core.reference.persist import (
    STORE_FORMAT,
    ReferenceStore,
    SplitState,
    dataset_fingerprint,
    decode_objects,
    decode_split,
    encode_objects,
    encode_split,
    load_or_fit,
)
from zeal_core.reference.source import ModelSource
from zeal_core.reference.state import StateError

log = logging.getLogger(__name__)

BANK_SEED_OFFSET = 1  # the bank draw uses seed + 1: not the reference draw's own stream


def fit_reference(version: str, dataset: str | Any | None = None, config: ReferenceConfig | None = None, *,
                  device: str | torch.device = "auto", registry: Any = None,
                  progress: ProgressCallback | None = None, bank_folder: Path | None = None,
                  persist: bool = True, settings: dict[str, Any] | None = None) -> FittedReference:
    """Fit (or load) a reference for ``version`` on the clean held-out half of its dataset's validation split.

    The split is cut into two fixed disjoint halves (``zeal_core.embed.part_positions``): the reference is
    drawn from the "reference" half, simulated samples from the "sample" half, so a clean sample is a fair
    no-drift case. The whole split is embedded once (clean); the reference is a seeded draw of
    ``config.reference_n`` of its half (all of it by default), restricted to the classes the model knows.
    The shift bank of the diagnosis is a seeded draw of ``config.bank_n`` images of the same half, made
    independently of the reference size, so its warm-up serves every reference size.

    Args:
        version: A model version, or "active"/"latest".
        dataset: Dataset name or ``ImageDataset``; default the model's.
        config: Reference size, seed, alpha, detectors.
        device: Where the model runs.
        registry: The model registry; default the one in ``models_dir()``.
        progress: Receives ``reference`` events.
        bank_folder: Where the shift bank is kept (default: the model's fitted folder when ``persist``).
        persist: Load and keep the fitted parts next to the model version (False: fit everything now).
        settings: The check settings reports name (default: ``config.describe()``).

    Raises:
        ConfigError: A reference size larger than the reference half. ModelError / DataError: the model or
            dataset cannot be loaded, or they do not fit each other.
    """
    from zeal_core.models.registry import ModelRegistry

    config = config or ReferenceConfig()
    registry = registry if registry is not None else ModelRegistry()
    device = resolve_device(device)
    resolved = registry.resolve(version)
    report(progress, "reference", 0, 3, f"loading {resolved}")
    model, card = registry.load(resolved, device=device)
    loaded = None if dataset is None or isinstance(dataset, str) else dataset
    name = loaded.name if loaded is not None else (dataset or card.dataset)
    fingerprint = loaded.fingerprint if loaded is not None else dataset_fingerprint(name)
    store = ReferenceStore.for_version(registry.root, resolved) if persist else None
    base = {"format": STORE_FORMAT, "weights": card.weights_sha256 or resolved, "dataset": name,
            "fingerprint": fingerprint, "split": config.split}

    def embed_split() -> SplitState:
        data = loaded if loaded is not None else _shared(name)
        return _embed_split(model, card, data, config, device, progress)

    split, _ = load_or_fit(store, "split", base, embed_split, encode_split, decode_split)
    source = ModelSource(model=model, card=card, device=device, dataset_name=name, split=config.split,
                         split_clean=split.clean, split_labels=split.split_labels,
                         class_names=split.class_names, image_size=split.image_size,
                         fingerprint=split.fingerprint, dataset=loaded)
    positions = _reference_positions(split.split_labels, source.label_map, config)
    bank_positions = _bank_positions(split.split_labels, source.label_map, config)
    reference = split.clean.subset(positions)  # rows of ``clean`` are split positions
    report(progress, "reference", 2, 3, f"fitting detectors on {len(positions):,} images")
    warm = None if store is None else WarmBundle(store, _warm_key(base, config, bank_positions))
    folder = bank_folder if bank_folder is not None else (store.folder if store is not None else None)

    def build(restored: dict[str, Any] | None = None) -> FittedReference:
        return FittedReference(reference, config, dataset_name=name, version=resolved, source=source,
                               bank_folder=folder, bank_positions=bank_positions, restored=restored,
                               warm_store=warm, settings=settings)

    profile_key = {**base, "config": list(config.cache_key()), "positions": _digest(positions)}
    built: list[FittedReference] = []

    def fit_profile() -> dict[str, Any]:
        built.append(build())
        return built[0].fitted_state()

    restored, was_loaded = load_or_fit(store, "profile", profile_key, fit_profile, encode_objects,
                                       decode_objects)
    # With a store, even the fitting process uses the state as stored (bit-identical to later processes).
    fitted = built[0] if store is None else build(restored)
    report(progress, "reference", 3, 3, "reference ready" + (" (loaded)" if was_loaded else ""))
    return fitted


def _shared(name: str) -> Any:
    from zeal_core.data import shared_dataset

    return shared_dataset(name)


def _embed_split(model: torch.nn.Module, card: Any, data: Any, config: ReferenceConfig, device: torch.device,
                 progress: ProgressCallback | None) -> SplitState:
    """The whole split embedded clean (labels in the model's space), with the dataset's identity."""
    from zeal_core.models.registry import label_map

    mapping = label_map(card, data.class_names)
    images, dataset_labels = data.split(config.split)
    split_labels = dataset_labels.numpy().astype(np.int64)
    report(progress, "reference", 1, 3, f"embedding {images.shape[0]:,} clean {config.split} images")
    clean = compute_embeddings(model, card.model_config, images.to(device), device,
                               labels=mapping[split_labels], batch_size=config.batch_size)
    return SplitState(clean=clean, split_labels=split_labels, class_names=tuple(data.class_names),
                      image_size=int(data.image_size), fingerprint=data.fingerprint)


def _known_half(split_labels: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    half = part_positions(len(split_labels), "reference")
    return half[mapping[split_labels[half]] >= 0]


def _reference_positions(split_labels: np.ndarray, mapping: np.ndarray,
                         config: ReferenceConfig) -> np.ndarray:
    """Sorted split positions of the reference: a seeded draw from the reference half's known classes."""
    known = _known_half(split_labels, mapping)
    size = len(known) if config.reference_n is None else config.reference_n
    if not 2 <= size <= len(known):
        raise ConfigError(f"reference_n = {size}: the reference half holds {len(known)} images of the "
                          f"model's classes; use 2 <= reference_n <= {len(known)}")
    if size == len(known):
        return known
    return np.sort(np.random.default_rng(config.seed).choice(known, size=size, replace=False))


def _bank_positions(split_labels: np.ndarray, mapping: np.ndarray, config: ReferenceConfig) -> np.ndarray:
    """Sorted split positions of the shift bank's images: ``bank_n`` of the reference half's known classes
    (all of them when fewer), drawn with their own seed whatever the reference size."""
    known = _known_half(split_labels, mapping)
    if len(known) <= config.bank_n:
        return known
    rng = np.random.default_rng(config.seed + BANK_SEED_OFFSET)
    return np.sort(rng.choice(known, size=config.bank_n, replace=False))


def _digest(positions: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16]


def _warm_key(base: dict[str, Any], config: ReferenceConfig, bank_positions: np.ndarray) -> dict[str, Any]:
    """What the warm-up depends on: model, dataset, the bank's images, shifts and seed, the fitted names."""
    from zeal_core.estimate import estimator_info
    from zeal_core.reference.labelfree import DEFAULT_ESTIMATORS, DIAGNOSER
    from zeal_core.shifts import bank_specs

    names = [name for name in (config.estimators or DEFAULT_ESTIMATORS) if estimator_info(name).needs_bank]
    return {**base, "bank": _digest(bank_positions), "seed": config.seed, "diagnoser": DIAGNOSER,
            "estimators": names, "specs": [spec.text for spec in bank_specs()]}


class WarmBundle:
    """The label-free warm-up of one model kept in its store (what ``LabelFreeParts`` loads and saves)."""

    def __init__(self, store: ReferenceStore, key: dict[str, Any]) -> None:
        self.store = store
        self.key = key

    def load(self) -> tuple[Any, dict[str, Any]] | None:
        """(diagnoser, bank-fitted estimators) kept by an earlier warm-up, or None."""
        stored = self.store.read("warm", self.key)
        return None if stored is None else _restore(stored)

    def save(self, diagnoser: Any, estimators: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Keep a finished warm-up for every later process (a storage failure is logged, not raised).

        Returns:
            The warm-up as later processes will load it (the same arrays and layout: bit-identical results),
            or as given when it cannot be stored.
        """
        try:
            tree, arrays = encode_objects({"diagnoser": diagnoser, "estimators": estimators})
        except StateError as error:
            log.error("cannot keep the diagnosis warm-up (%s): every process will refit it", error)
            return diagnoser, estimators
        self.store.write("warm", self.key, tree, arrays)
        return _restore((json.loads(json.dumps(tree)), arrays)) or (diagnoser, estimators)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a warm-up is fitted: a second process waits and then loads the result."""
        with self.store.lock("warm", self.key):
            yield


def _restore(stored: tuple[Any, dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]] | None:
    try:
        values = decode_objects(*stored)
        return values["diagnoser"], dict(values["estimators"])
    except (StateError, KeyError, TypeError) as error:
        log.warning("refused the kept diagnosis warm-up: %s; refitting it", error)
        return None
