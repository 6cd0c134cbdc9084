"""One in-process copy of each loaded dataset, shared read-only by everything in the process.

An Imagenette cache is about 1 GB of uint8 pixels: the app's pages, the fitted references and the
benchmarks must not each hold a copy. ``shared_dataset`` keeps the few most recently used datasets, keyed by
name, working size and data folder (tests and servers may point the folder elsewhere).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from zeal_core.data.dataset import ImageDataset
from zeal_core.data.settings import data_root, params_path
from zeal_core.progress import ProgressCallback

KEEP = 2  # datasets kept loaded (Imagenette ~1 GB, digits ~2 MB)

_LOADED: OrderedDict[tuple, ImageDataset] = OrderedDict()
_LOCK = threading.Lock()


def shared_dataset(name: str, progress: ProgressCallback | None = None, *, image_size: int | None = None,
                   root: Path | str | None = None, params_file: Path | str | None = None) -> ImageDataset:
    """``load_dataset(name, root=root, params_file=params_file)``, loaded once per process (never downloads;
    see ``load_dataset``)."""
    from zeal_core.data import load_dataset

    key = (name, image_size, str(data_root(root)), str(params_path(params_file)))
    with _LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    dataset = load_dataset(name, progress, image_size=image_size, root=root, params_file=params_file)
    with _LOCK:
        _LOADED[key] = dataset
        while len(_LOADED) > KEEP:
            _LOADED.popitem(last=False)
    return dataset


def forget_datasets() -> None:
    """Drop every shared dataset (after a folder dataset changed on disk, or in tests)."""
    with _LOCK:
        _LOADED.clear()
