"""Embeddings: what a model sees in a set of images (penultimate features, logits, softmax), and the halves.

``compute_embeddings`` runs a model over uint8 images in batches (the one forward pass for features and
softmax in the lab). Reference and sample must not share images, or a clean-vs-clean comparison is not a fair
no-drift test: ``part_positions`` cuts a split into two fixed, disjoint halves, "reference" and "sample"
(``zeal_core.reference`` fits on the first and draws tested samples from the second).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from zeal_core.device import resolve_device
from zeal_core.errors import ConfigError
from zeal_core.models import ModelConfig, extract_features, prepare_batch

if TYPE_CHECKING:
    from torch import nn


# Parts of a split: the whole of it, or one of two disjoint halves, "reference" and "sample".
PARTS = ("all", "reference", "sample")
# Seed of the fixed shuffle that cuts a split into its two halves (independent of the sample seed, so the
# halves never change).
PART_SEED = 20240601


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
