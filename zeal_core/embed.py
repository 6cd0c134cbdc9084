"""Embeddings: a model's penultimate features and softmax outputs for a (possibly drifted) dataset sample.

``compute_embeddings`` runs a model over uint8 images in batches. ``embed_sample`` does the whole chain
for the pages and the command line: load a registered model, draw a seeded sample from a split, apply a
drift spec, embed; results are cached in-process (LRU) by (model version, dataset fingerprint, spec text,
n, seed, split, part, device).

Reference and sample must not share images, or a clean-vs-clean comparison is not a fair no-drift test. The
``part`` argument splits a dataset split into two fixed, disjoint halves: draw the reference with
``part="reference"`` and the sample with ``part="sample"`` (``part="all"`` draws from the whole split).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zeal_core.device import resolve_device
from zeal_core.errors import ConfigError
from zeal_core.models import ModelConfig, extract_features, prepare_batch

if TYPE_CHECKING:
    from torch import nn

    from zeal_core.data import ImageDataset

# Parts of a split that embed_sample can draw from; "reference" and "sample" are disjoint halves.
PARTS = ("all", "reference", "sample")
# Seed of the fixed shuffle that cuts a split into its two halves (independent of the sample seed, so the
# halves never change).
PART_SEED = 20240601
# Embeddings kept by the in-process cache (each is N x 512 float32 plus softmax: ~2 MB at n = 1000).
CACHE_SIZE = 64
# Models kept loaded by embed_sample, keyed by (version, device).
MODEL_CACHE_SIZE = 2


# Fields of Embeddings that hold one row per item (besides ``extra``).
_ROW_FIELDS = ("features", "probs", "preds", "labels", "indices", "affected", "logits")


@dataclass(frozen=True)
class Embeddings:
    """What a model sees in a set of images. Arrays are read-only (they may be shared through the cache)."""

    features: np.ndarray  # float32, N x D penultimate-layer features (D = 512 for resnet18)
    probs: np.ndarray  # float32, N x C softmax outputs
    preds: np.ndarray  # int64, N predicted class (argmax of probs)
    labels: np.ndarray | None  # int64, N true labels, or None when unknown
    indices: np.ndarray  # int64, N positions of the items in their split (for thumbnails and tracing)
    spec: str = "clean"  # canonical drift-spec text applied before embedding
    affected: np.ndarray | None = None  # bool, N: True where the drift spec corrupted the image
    logits: np.ndarray | None = None  # float32, N x C raw classifier outputs (probs = softmax(logits))
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> N-row array of other signals

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        arrays = {name: getattr(self, name) for name in _ROW_FIELDS}
        arrays.update({f"extra[{key!r}]": value for key, value in self.extra.items()})
        for name, value in arrays.items():
            if value is not None and value.shape[0] != n:
                raise ConfigError(f"Embeddings.{name} has {value.shape[0]} rows, features have {n}")
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def accuracy(self) -> float | None:
        """Share of correct predictions, or None without labels."""
        if self.labels is None or len(self) == 0:
            return None
        return float((self.preds == self.labels).mean())

    def subset(self, positions: np.ndarray | list[int]) -> Embeddings:
        """The items at ``positions`` (row numbers of this object), as new Embeddings."""
        rows = np.asarray(positions, dtype=np.int64)

        def pick(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[rows].copy()

        picked = {name: pick(getattr(self, name)) for name in _ROW_FIELDS}
        return Embeddings(**picked, spec=self.spec,
                          extra={key: value[rows].copy() for key, value in self.extra.items()})

    def without_labels(self) -> Embeddings:
        """The same items with ``labels`` None: what label-free code (estimators, diagnosis) receives."""
        return replace(self, labels=None)

    def with_extra(self, **signals: np.ndarray) -> Embeddings:
        """The same items with more per-image signals in ``extra`` (e.g. a second model's softmax)."""
        return replace(self, extra={**self.extra, **signals})


def compute_embeddings(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
                       device: str | torch.device, labels: torch.Tensor | np.ndarray | None = None,
                       batch_size: int = 256) -> Embeddings:
    """Run ``model`` over uint8 images in batches; features and softmax as float32 numpy arrays.

    Args:
        model: A timm network (put in eval mode here; its weights are not changed).
        model_config: The model's config (sets the input size and normalisation).
        images: uint8 N x 3 x H x W, on any device.
        device: Where to run; the model must already live there. bf16 autocast is used on CUDA.
        labels: Optional true labels, N.
        batch_size: Images per forward pass.

    Raises:
        ConfigError: Images are not uint8 N x 3 x H x W, or batch_size < 1.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    model.eval()
    features, logits = [], []
    use_bf16 = device.type == "cuda"
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = prepare_batch(images[start:start + batch_size], model_config, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                batch_features, batch_logits = extract_features(model, batch)
            features.append(batch_features.float().cpu())
            logits.append(batch_logits.float().cpu())
    n = images.shape[0]
    feature_array = (torch.cat(features).numpy() if features
                     else np.zeros((0, getattr(model, "num_features", 0)), np.float32))
    logit_tensor = torch.cat(logits) if logits else torch.zeros((0, model_config.num_classes))
    prob_array = torch.softmax(logit_tensor, dim=1).numpy()
    label_array = None
    if labels is not None:
        label_array = (labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor)
                       else np.asarray(labels)).astype(np.int64)
    return Embeddings(features=feature_array.astype(np.float32, copy=False),
                      probs=prob_array.astype(np.float32, copy=False),
                      preds=prob_array.argmax(1).astype(np.int64) if n else np.zeros(0, np.int64),
                      labels=label_array, indices=np.arange(n, dtype=np.int64),
                      logits=logit_tensor.numpy().astype(np.float32, copy=False))


def part_positions(split_size: int, part: str) -> np.ndarray:
    """Positions (into a split of ``split_size`` items) that make up ``part``: a fixed, seeded half or all.

    The "reference" half has ceil(N/2) items, the "sample" half floor(N/2); they never overlap.
    """
    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}: use one of {', '.join(PARTS)}")
    if part == "all":
        return np.arange(split_size, dtype=np.int64)
    shuffled = np.random.default_rng(PART_SEED).permutation(split_size)
    half = (split_size + 1) // 2
    chosen = shuffled[:half] if part == "reference" else shuffled[half:]
    return np.sort(chosen).astype(np.int64)


def draw_positions(split_size: int, n: int, seed: int = 0, part: str = "all") -> np.ndarray:
    """A seeded sample of ``n`` distinct positions from ``part`` of a split (sorted).

    Raises:
        ConfigError: ``n`` is below 1 or larger than the part.
    """
    pool = part_positions(split_size, part)
    if not 1 <= n <= len(pool):
        raise ConfigError(f"n = {n} items asked for, but the {part!r} part of this split has {len(pool)}: "
                          f"use 1 <= n <= {len(pool)}")
    chosen = np.random.default_rng(seed).choice(pool, size=n, replace=False)
    return np.sort(chosen).astype(np.int64)


_CACHE: OrderedDict[tuple, Embeddings] = OrderedDict()
_MODELS: OrderedDict[tuple[str, str], tuple[Any, Any]] = OrderedDict()
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget cached embeddings and loaded models (e.g. after a model version is deleted)."""
    with _LOCK:
        _CACHE.clear()
        _MODELS.clear()


def _load_model(version: str, device: torch.device) -> tuple[Any, Any]:
    from zeal_core.models.registry import ModelRegistry

    key = (version, str(device))
    with _LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    model, card = ModelRegistry().load(version, device=str(device))
    with _LOCK:
        _MODELS[key] = (model, card)
        while len(_MODELS) > MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
    return model, card


def embed_sample(version: str, dataset: str | ImageDataset, spec: Any = None, n: int = 200, seed: int = 0,
                 split: str = "val", device: str = "auto", part: str = "all",
                 batch_size: int = 256) -> Embeddings:
    """Embed a seeded sample of a dataset split, after applying a drift spec, with a registered model.

    Args:
        version: Model version in the registry (``zeal_core.models.registry.ModelRegistry``).
        dataset: Dataset name (loaded with ``zeal_core.data.load_dataset``) or an ``ImageDataset``.
        spec: A ``DriftSpec``, its text (e.g. ``"gaussian_noise:3@0.5"``), or None/"clean" for no drift.
        n: Items to draw.
        seed: Seeds the draw and the corruption (same seed, same images, same noise).
        split: "val" or "train".
        device: "auto", "cpu", "cuda" or "cuda:N".
        part: "all", or one of the two disjoint halves "reference" / "sample" (see the module docstring).
        batch_size: Images per forward pass.

    Returns:
        Embeddings with ``indices`` = positions in the split, ``spec`` = canonical spec text and ``affected``
        = which items were corrupted. Cached: the same arguments return the same (read-only) object.

    Raises:
        ConfigError: Bad spec, split, part or n. ModelError / DataError from the registry or dataset loader.
    """
    from zeal_core.corruptions import DriftSpec
    from zeal_core.data import load_dataset

    drift_spec = spec if isinstance(spec, DriftSpec) else DriftSpec.parse(str(spec) if spec else "clean")
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    torch_device = resolve_device(device)
    key = (version, data.fingerprint, drift_spec.text, int(n), int(seed), split, part, str(torch_device))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    images, labels = data.split(split)
    positions = draw_positions(images.shape[0], int(n), seed=int(seed), part=part)
    model, card = _load_model(version, torch_device)
    chosen = images[torch.from_numpy(positions)].to(torch_device)
    affected = None
    if not drift_spec.is_clean:
        affected = drift_spec.affected_mask(len(positions), seed=int(seed)).cpu().numpy().astype(bool)
        chosen = drift_spec.apply(chosen, seed=int(seed))
    result = compute_embeddings(model, card.model_config, chosen, torch_device, labels=labels[positions],
                                batch_size=batch_size)
    result = replace(result, indices=positions, spec=drift_spec.text,
                     affected=affected if affected is not None else np.zeros(len(positions), bool))
    with _LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result
