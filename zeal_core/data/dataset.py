"""The one dataset object every source returns, and its on-disk uint8 cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zeal_core.errors import DataError
from zeal_core.fileio import atomic_write, atomic_write_bytes
from zeal_core.paths import remove_stale_temp_files

# Bump when the cache layout changes, so that old caches are rebuilt instead of misread.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images held in memory as one uint8 tensor, with labels and a fixed train/val split."""

    name: str  # source name: "digits", "imagenette", or "folder:<absolute path>" (load_dataset(name) reloads)
    images: torch.Tensor  # uint8, N x 3 x H x W, RGB, at the dataset's working size
    labels: torch.Tensor  # int64, N, class index into class_names
    is_val: torch.Tensor  # bool, N, True for the validation split
    class_names: tuple[str, ...]  # human-readable class names, index = label
    fingerprint: str  # sha256 hex of the content (images, labels, split, class names)
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (file, reason) of unreadable inputs

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataError(f"dataset {self.name}: images must be uint8 N x 3 x H x W, got "
                            f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or self.is_val.shape != (n,):
            raise DataError(f"dataset {self.name}: labels and split must have one entry per image")

    @property
    def num_classes(self) -> int:
        """How many classes there are."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """The working size in pixels (images are square)."""
        return int(self.images.shape[-1])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the ``"train"`` or ``"val"`` split (views, no copy for contiguous masks)."""
        if which not in ("train", "val"):
            raise DataError(f"unknown split {which!r}: use 'train' or 'val'")
        mask = self.is_val if which == "val" else ~self.is_val
        return self.images[mask], self.labels[mask]

    def with_classes(self, names: tuple[str, ...] | list[str]) -> ImageDataset:
        """Only the images of the classes ``names``, relabelled 0..k-1 in the order given.

        A model trained on such a subset meets the other classes as unseen ones (the ``unseen_classes``
        drift). The name stays the source's (``load_dataset(name)`` gives the full set back); the
        fingerprint is the subset's own.

        Raises:
            DataError: A name is not a class of this dataset, is repeated, or fewer than 2 are given.
        """
        chosen = tuple(str(name) for name in names)
        unknown = [name for name in chosen if name not in self.class_names]
        if unknown or len(set(chosen)) != len(chosen) or len(chosen) < 2:
            raise DataError(f"dataset {self.name}: a class subset needs at least 2 distinct classes of "
                            f"{list(self.class_names)}; got {list(chosen)}")
        old_to_new = torch.full((self.num_classes,), -1, dtype=torch.int64)
        for new_index, name in enumerate(chosen):
            old_to_new[self.class_names.index(name)] = new_index
        mapped = old_to_new[self.labels]
        keep = mapped >= 0
        images, labels, is_val = self.images[keep], mapped[keep], self.is_val[keep]
        return ImageDataset(name=self.name, images=images, labels=labels, is_val=is_val, class_names=chosen,
                            fingerprint=content_fingerprint(images, labels, is_val, chosen),
                            skipped=self.skipped)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class and split, e.g. ``{"tench": {"train": 963, "val": 387}}``."""
        counts: dict[str, dict[str, int]] = {}
        for index, name in enumerate(self.class_names):
            in_class = self.labels == index
            counts[name] = {
                "train": int((in_class & ~self.is_val).sum()),
                "val": int((in_class & self.is_val).sum()),
            }
        return counts

    def info(self) -> dict:
        """A JSON-ready summary: name, sizes, classes, fingerprint."""
        return {
            "dataset": self.name,
            "num_images": int(self.images.shape[0]),
            "num_train": int((~self.is_val).sum()),
            "num_val": int(self.is_val.sum()),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
            "class_counts": self.class_counts(),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def content_fingerprint(
    images: torch.Tensor, labels: torch.Tensor, is_val: torch.Tensor, class_names: tuple[str, ...]
) -> str:
    """sha256 over the decoded content, so a cache or model can tell exactly which data it saw."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, list(class_names), list(images.shape)]).encode())
    # Hash the tensors' memory in place (no .tobytes() copy: Imagenette's images are about 1 GB).
    digest.update(images.contiguous().numpy())
    digest.update(labels.to(torch.int64).contiguous().numpy())
    digest.update(is_val.to(torch.uint8).contiguous().numpy())
    return digest.hexdigest()


def save_cache(dataset: ImageDataset, path: Path) -> None:
    """Store a dataset as ``<path>.safetensors`` (tensors) plus ``<path>.json`` (names), atomically.

    The JSON is written last and names the tensor file's fingerprint, so a cache is only valid when both
    halves are there and agree.

    Raises:
        DataError: The cache cannot be written (full disk, no permission); nothing new is left behind and
            an older cache at ``path`` stays as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors_path = path.with_suffix(".safetensors")
    meta_path = path.with_suffix(".json")
    for target in (tensors_path, meta_path):  # temp files of a save that was killed
        remove_stale_temp_files(path.parent, target.name)
    meta = {
        "format": CACHE_FORMAT,
        "name": dataset.name,
        "class_names": list(dataset.class_names),
        "fingerprint": dataset.fingerprint,
        "skipped": [list(item) for item in dataset.skipped],
    }
    had_tensors = tensors_path.exists()
    tensors = {"images": dataset.images.contiguous(), "labels": dataset.labels.contiguous(),
               "is_val": dataset.is_val.to(torch.uint8).contiguous()}
    try:
        atomic_write(tensors_path, lambda tmp: save_file(tensors, str(tmp)))
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    except (OSError, SafetensorError) as error:
        if not had_tensors:  # tensors without their JSON are never read: do not keep them
            tensors_path.unlink(missing_ok=True)
        raise DataError(f"could not write the dataset cache {tensors_path}: {error}. Free some disk space "
                        f"in {path.parent} (or point ZEAL_DATA_DIR elsewhere) and load it again.") from None


def load_cache(path: Path) -> ImageDataset | None:
    """Load a cache written by ``save_cache``; None when it is missing, stale or damaged (then rebuild)."""
    meta_path, tensors_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not meta_path.exists() or not tensors_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            return None
        tensors = load_file(str(tensors_path))
        return ImageDataset(
            name=meta["name"],
            images=tensors["images"],
            labels=tensors["labels"],
            is_val=tensors["is_val"].bool(),
            class_names=tuple(meta["class_names"]),
            fingerprint=meta["fingerprint"],
            skipped=tuple(tuple(item) for item in meta.get("skipped", [])),
        )
    except (OSError, ValueError, KeyError, json.JSONDecodeError, SafetensorError, DataError):
        return None
