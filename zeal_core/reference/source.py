"""The model side of a fitted reference: the model, its card, and the clean split it was fitted on.

The dataset's pixels are loaded only when something needs them (a simulated drift spec, a thumbnail of a
reference image, the shift bank): a check of real images needs the model and the stored embeddings only,
so ``check`` from cron never reads a gigabyte of Imagenette.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from zeal_core.embed import Embeddings, part_positions
from zeal_core.errors import DataError


class ModelSource:
    """A registered model and the clean split of its dataset, as a reference fitted from them holds them."""

    def __init__(self, *, model: torch.nn.Module, card: Any, device: torch.device, dataset_name: str,
                 split: str, split_clean: Embeddings, split_labels: np.ndarray,
                 class_names: tuple[str, ...], image_size: int, fingerprint: str,
                 dataset: Any = None) -> None:
        """Args:
        model: In eval mode; shared read-only, never trained in place.
        card: Its ModelCard.
        device: Where it runs.
        dataset_name: The dataset the split comes from (loaded lazily by this name).
        split: "val" or "train".
        split_clean: The whole split, clean, as the model sees it (labels in the model's space).
        split_labels: int64 dataset label per split image.
        class_names: The dataset's classes (all of them).
        image_size: The dataset's working size (px).
        fingerprint: The dataset's content fingerprint when the split was embedded.
        dataset: The loaded ImageDataset, when the caller has it already.
        """
        from zeal_core.models.registry import label_map

        self.model = model
        self.card = card
        self.device = device
        self.dataset_name = dataset_name
        self.split = split
        self.split_clean = split_clean
        self.split_labels = np.asarray(split_labels, dtype=np.int64)
        self.class_names = tuple(class_names)
        self.image_size = int(image_size)
        self.fingerprint = fingerprint
        self.label_map = label_map(card, self.class_names)  # int64 per dataset class, -1 if unseen
        self.pool = part_positions(len(self.split_labels), "sample")  # the held-out sample half
        self._dataset = dataset
        self._split_images: torch.Tensor | None = None
        self._lock = threading.Lock()

    @property
    def dataset(self) -> Any:
        """The whole ImageDataset (loaded on first use, shared by the process).

        Raises:
            DataError: It is not prepared, or its content changed since this reference was fitted.
        """
        with self._lock:
            if self._dataset is None:
                from zeal_core.data import shared_dataset

                loaded = shared_dataset(self.dataset_name)
                if loaded.fingerprint != self.fingerprint:
                    raise DataError(f"dataset {self.dataset_name} changed since the reference of "
                                    f"{self.card.version} was fitted: restart the process to refit it")
                self._dataset = loaded
            return self._dataset

    @property
    def split_images(self) -> torch.Tensor:
        """uint8 images of the split the halves come from (loads the dataset; the split is cut once)."""
        images = self._split_images
        if images is None:
            images = self.dataset.split(self.split)[0]
            with self._lock:
                self._split_images = images
        return images

    @property
    def known_classes(self) -> tuple[str, ...]:
        """Dataset classes the model predicts."""
        return tuple(name for name, out in zip(self.class_names, self.label_map, strict=True) if out >= 0)

    def model_labels(self, positions: np.ndarray) -> np.ndarray:
        """Labels in the model's output space of the split images at ``positions`` (-1: unseen class)."""
        return self.label_map[self.split_labels[positions]]
