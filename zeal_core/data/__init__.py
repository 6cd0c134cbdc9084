"""Data layer: every source (embedded digits, Imagenette-160, a user's image folder) returns an ImageDataset.

Side effects (downloads, extraction, decoding to the uint8 cache, DVC) live here and nowhere else.
"""

from __future__ import annotations

from zeal_core.data.dataset import ImageDataset
from zeal_core.data.digits import load_digits_dataset
from zeal_core.errors import DataError
from zeal_core.progress import ProgressCallback

__all__ = ["ImageDataset", "list_datasets", "load_dataset", "prepare_dataset"]


def list_datasets() -> list[str]:
    """Names of the built-in sources, for selectboxes and ``--dataset``; ``folder:PATH`` works too."""
    return ["digits", "imagenette"]


def load_dataset(name: str, progress: ProgressCallback | None = None) -> ImageDataset:
    """Load a prepared dataset by name; never downloads (use ``prepare_dataset`` for that).

    Args:
        name: ``"digits"``, ``"imagenette"`` or ``"folder:PATH"`` (one subfolder per class).
        progress: Receives decode progress when a cache has to be built.

    Raises:
        DataError: The dataset is unknown, or not prepared yet (the message says how to prepare it).
    """
    if name == "digits":
        return load_digits_dataset()
    raise DataError(f"unknown dataset {name!r}: choose one of {list_datasets()} or folder:PATH")


def prepare_dataset(name: str, progress: ProgressCallback | None = None) -> ImageDataset:
    """Make a dataset ready to load: download, verify, extract and decode as needed; idempotent."""
    return load_dataset(name, progress=progress)
