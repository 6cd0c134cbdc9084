"""Data layer: every source (embedded digits, Imagenette-160, a user's image folder) returns an ImageDataset.

Side effects (downloads, archive checks, decoding to the uint8 cache) live here and nowhere else. Every
loader takes the data folder as ``root`` (None = ``zeal_core.paths.data_dir()``, i.e. ``ZEAL_DATA_DIR``) and
the params file as ``params_file`` (None = ``ZEAL_PARAMS`` or the project's ``params.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from zeal_core.data.dataset import ImageDataset
from zeal_core.data.decode import decode_images
from zeal_core.data.digits import DIGITS_SIZE, load_digits_dataset
from zeal_core.data.folder import PREFIX as FOLDER_PREFIX
from zeal_core.data.folder import is_folder_prepared, load_folder
from zeal_core.data.imagenette import is_imagenette_prepared, load_imagenette, prepare_imagenette
from zeal_core.data.shared import forget_datasets, shared_dataset
from zeal_core.errors import ConfigError, DataError
from zeal_core.progress import CancelToken, ProgressCallback

__all__ = ["ImageDataset", "decode_images", "forget_datasets", "is_prepared", "list_datasets", "load_dataset",
           "prepare_dataset", "shared_dataset"]


def list_datasets() -> list[str]:
    """Names of the built-in sources, for selectboxes and ``--dataset``; ``folder:PATH`` works too."""
    return ["digits", "imagenette"]


def _unknown(name: str) -> DataError:
    return DataError(f"unknown dataset {name!r}: choose one of {list_datasets()} or folder:PATH")


def _check_digits_size(image_size: int | None) -> None:
    if image_size is not None and image_size != DIGITS_SIZE:
        raise ConfigError(f"digits has a fixed size of {DIGITS_SIZE} px, not {image_size}")


def load_dataset(
    name: str,
    progress: ProgressCallback | None = None,
    *,
    image_size: int | None = None,
    root: Path | str | None = None,
    params_file: Path | str | None = None,
) -> ImageDataset:
    """Load a dataset by name; never downloads (use ``prepare_dataset`` for that).

    A ``folder:PATH`` dataset is decoded into its cache on first use (there is nothing to download).

    Args:
        name: ``"digits"``, ``"imagenette"`` or ``"folder:PATH"`` (one subfolder per class).
        progress: Receives decode progress when a folder's cache has to be built.
        image_size: Working size in pixels; default from ``params.yaml`` (160 Imagenette, 64 folders).
        root: The data folder holding the prepared caches (default ``zeal_core.paths.data_dir()``).
        params_file: The params file with the ``data:`` section (default ``ZEAL_PARAMS`` / ``params.yaml``).

    Raises:
        DataError: The dataset is unknown, or not prepared yet (the message says how to prepare it).
    """
    if name == "digits":
        _check_digits_size(image_size)
        return load_digits_dataset()
    if name == "imagenette":
        return load_imagenette(image_size, root=root, params_file=params_file)
    if name.startswith(FOLDER_PREFIX):
        return load_folder(name, image_size, progress, root=root, params_file=params_file)
    raise _unknown(name)


def prepare_dataset(
    name: str,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    image_size: int | None = None,
    root: Path | str | None = None,
    params_file: Path | str | None = None,
) -> ImageDataset:
    """Make a dataset ready to load: download, verify, check and decode as needed; idempotent.

    Args:
        name: ``"digits"``, ``"imagenette"`` or ``"folder:PATH"``.
        progress: Receives ``download``/``verify``/``decode``/``save`` events.
        cancel: Checked between chunks and images.
        image_size: Working size in pixels; default from ``params.yaml``.
        root: The data folder the archive and the caches go to (default ``zeal_core.paths.data_dir()``).
        params_file: The params file with the ``data:`` section (default ``ZEAL_PARAMS`` / ``params.yaml``).

    Raises:
        DataError: Unknown dataset, no network, wrong checksum, truncated download, unsafe archive, or no
            readable image; nothing partial is left under the data folder.
        Cancelled: ``cancel`` was set.
    """
    if name == "digits":
        _check_digits_size(image_size)
        return load_digits_dataset()
    if name == "imagenette":
        return prepare_imagenette(image_size, progress, cancel, root=root, params_file=params_file)
    if name.startswith(FOLDER_PREFIX):
        return load_folder(name, image_size, progress, cancel, root=root, params_file=params_file)
    raise _unknown(name)


def is_prepared(name: str, *, image_size: int | None = None, root: Path | str | None = None,
                params_file: Path | str | None = None) -> bool:
    """True when ``load_dataset(name, root=root)`` would return at once from its cache (digits: always).

    Raises:
        DataError: Unknown dataset or missing folder.
    """
    if name == "digits":
        return True
    if name == "imagenette":
        return is_imagenette_prepared(image_size, root=root, params_file=params_file)
    if name.startswith(FOLDER_PREFIX):
        return is_folder_prepared(name, image_size, root=root, params_file=params_file)
    raise _unknown(name)
