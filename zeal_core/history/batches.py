"""The images of recorded checks, kept so the retrain policy can adapt on them later.

Each batch is one safetensors file (uint8 N x 3 x S x S at the model's input size at most) under
``<history folder>/batches/<check id>.safetensors``, written atomically. Only the newest ``KEEP`` batches
are kept; the history rows of older ones stay, with their ``batch_file`` cleared.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zeal_core.augment import resize_uint8
from zeal_core.errors import DataError
from zeal_core.fileio import atomic_write

KEEP = 50  # newest batches kept on disk


def batch_folder(history_path: Path) -> Path:
    """Where a history database keeps its batches."""
    return Path(history_path).parent / "batches"


def save_batch(history_path: Path, check_id: int, images: torch.Tensor, max_side: int) -> str:
    """Store a check's images; returns the file name (relative to the batch folder)."""
    side = min(int(images.shape[-1]), int(max_side))
    pixels = resize_uint8(images.cpu(), side).contiguous()
    name = f"{int(check_id)}.safetensors"
    atomic_write(batch_folder(history_path) / name, lambda tmp: save_file({"images": pixels}, str(tmp)))
    return name


def load_batch(history_path: Path, name: str) -> torch.Tensor:
    """The images of one stored batch.

    Raises:
        DataError: The file is gone or damaged.
    """
    path = batch_folder(history_path) / Path(name).name  # a bare name: never a path outside the folder
    try:
        return load_file(str(path))["images"]
    except (OSError, SafetensorError, KeyError) as error:
        raise DataError(f"stored batch {path} cannot be read ({error}): it was pruned or damaged") from None


def prune_batches(history_path: Path, keep: int = KEEP) -> list[str]:
    """Delete all but the newest ``keep`` batch files; returns the names removed."""
    folder = batch_folder(history_path)
    if not folder.is_dir():
        return []
    numbered = [path for path in folder.glob("*.safetensors") if path.stem.isdigit()]
    files = sorted(numbered, key=lambda path: int(path.stem))
    removed = []
    for path in files[:-keep] if keep > 0 else files:
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
