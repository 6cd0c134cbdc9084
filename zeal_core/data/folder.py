"""A user's own image folder, ``folder:PATH``: one subfolder per class, like torchvision's ImageFolder.

``PATH/<class>/**/<image>``, or ``PATH/train/<class>/...`` plus ``PATH/val/<class>/...`` for a fixed split.
Without train/ and val/, a seeded stratified share of each class is held out for validation.

Images are decoded once into ``<data folder>/folders/<name>-<path hash>-<size>-<listing hash>``; the listing
hash covers every file's relative path, size and modification time, so the cache is rebuilt when the folder
changes. Files that cannot be used are skipped and reported by name and reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from zeal_core.data.dataset import ImageDataset, content_fingerprint, load_cache, save_cache
from zeal_core.data.decode import DECODE_VERSION, IMAGE_EXTENSIONS, decode_slots
from zeal_core.data.files import shown_name
from zeal_core.data.settings import FolderSettings, data_root, folder_settings
from zeal_core.errors import DataError
from zeal_core.progress import CancelToken, ProgressCallback, report

PREFIX = "folder:"
ROOTS_VARIABLE = "ZEAL_FOLDER_ROOTS"  # environment variable: the folders a shared server may read
# Most files a folder dataset may hold (a typo such as "/" would otherwise walk the whole disk).
MAX_FOLDER_FILES = 500_000


def allowed_folder_roots() -> list[Path]:
    """Folders that ``folder:PATH`` datasets must lie in (``ZEAL_FOLDER_ROOTS``, ``os.pathsep``-separated).

    Unset or empty: any folder (a local install). A shared server sets it, so that a user cannot make it
    read, cache and show images from elsewhere on its disk.
    """
    value = os.environ.get(ROOTS_VARIABLE, "")
    return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]


def folder_path(name: str) -> Path:
    """The folder of a ``folder:PATH`` dataset name, resolved to an absolute path.

    Raises:
        DataError: No path after ``folder:``, it is not an existing folder, or it lies outside
            ``ZEAL_FOLDER_ROOTS`` when that is set.
    """
    raw = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not raw.strip():
        raise DataError("folder dataset without a path: use folder:PATH, e.g. folder:~/pictures/pets")
    path = Path(raw.strip()).expanduser().resolve()
    if path.parent == path:  # "/" or a drive: the whole disk, never an image folder
        raise DataError(f"folder:{raw.strip()} is the root of the disk, not an image folder: use folder:PATH "
                        "with one subfolder per class")
    allowed = allowed_folder_roots()
    if allowed and not any(path == root or root in path.parents for root in allowed):
        raise DataError(f"image folder {path} is outside the folders this server may read "
                        f"({', '.join(map(str, allowed))}, set by {ROOTS_VARIABLE}): put the images there")
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist or is not a folder: use folder:PATH with one "
                        "subfolder per class")
    return path


def _visible_dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise DataError(f"image folder {shown_name(path)} cannot be listed ({error.strerror or error}): "
                        "check it is readable") from None


def _files_under(folder: Path, limit: int, root: Path) -> list[Path]:
    found = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(base) / f for f in sorted(files) if not f.startswith("."))
        if len(found) > limit:
            raise DataError(f"image folder {shown_name(root)} holds more than {MAX_FOLDER_FILES:,} files: is "
                            "it the right folder? Use folder:PATH with one subfolder per class")
    return found


def scan_folder(root: Path) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str]], bool]:
    """List the images of a class folder tree.

    Returns:
        ``(split or "", class, path)`` per image file in sorted order; ``(file, reason)`` per file skipped
        for its name ending; and whether the folder has its own train/ and val/ split.

    Raises:
        DataError: No class subfolders.
    """
    has_split = (root / "train").is_dir() and (root / "val").is_dir()
    groups = [("train", root / "train"), ("val", root / "val")] if has_split else [("", root)]
    images: list[tuple[str, str, Path]] = []
    skipped: list[tuple[str, str]] = []
    for split, base in groups:
        for class_dir in _visible_dirs(base):
            budget = MAX_FOLDER_FILES - len(images) - len(skipped)
            for file in _files_under(class_dir, budget, root):
                if file.suffix.lower() in IMAGE_EXTENSIONS:
                    images.append((split, shown_name(class_dir.name), file))
                else:
                    skipped.append((shown_name(file.relative_to(root)),
                                    f"not an image file name ending ({file.suffix or 'none'})"))
    if not images and not skipped:
        raise DataError(f"image folder {shown_name(root)} has no class subfolders with files: put one "
                        "subfolder per class (e.g. cats/, dogs/) holding its images")
    return images, skipped, has_split


def _listing_key(root: Path, files: list[Path], settings: FolderSettings) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([DECODE_VERSION, settings.image_size, settings.val_fraction,
                              settings.split_seed]).encode())
    for file in files:
        try:
            stat = file.stat()
            digest.update(os.fsencode(file.relative_to(root))
                          + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(os.fsencode(file.relative_to(root)) + b"\0missing\n")
    return digest.hexdigest()


def folder_cache_path(folder: Path, settings: FolderSettings, listing_key: str, *,
                      root: Path | str | None = None) -> Path:
    """The cache path (no suffix) for one state of one image folder at one working size.

    Args:
        folder: The user's image folder.
        settings: Working size and split settings.
        listing_key: Hash of the folder's current files (``_listing_key``).
        root: The data folder caches live in (default ``zeal_core.paths.data_dir()``).
    """
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", folder.name)[:40] or "folder"
    path_hash = hashlib.sha256(os.fsencode(folder)).hexdigest()[:8]
    name = f"{readable}-{path_hash}-{settings.image_size}-{listing_key[:16]}"
    return data_root(root) / "folders" / name


def stratified_val_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded per-class hold-out: about ``fraction`` of each class (at least one if it has two or more)."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(labels.shape[0], dtype=bool)
    if fraction <= 0.0:
        return is_val
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < 2:
            continue
        n_val = min(members.size - 1, max(1, round(fraction * members.size)))
        is_val[rng.permutation(members)[:n_val]] = True
    return is_val


def is_folder_prepared(name: str, image_size: int | None = None, *, root: Path | str | None = None,
                       params_file: Path | str | None = None) -> bool:
    """True when the cache for the folder's current files exists.

    Args:
        name: ``folder:PATH`` (or just the path).
        image_size: Working size in pixels (default from the params file, 64).
        root: The data folder caches live in (default ``zeal_core.paths.data_dir()``).
        params_file: The params file (default ``zeal_core.data.settings.params_path()``).
    """
    folder = folder_path(name)
    settings = folder_settings(image_size, params_file=params_file)
    images, _, _ = scan_folder(folder)
    path = folder_cache_path(folder, settings, _listing_key(folder, [p for _, _, p in images], settings),
                             root=root)
    return path.with_suffix(".json").is_file() and path.with_suffix(".safetensors").is_file()


def load_folder(
    name: str,
    image_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    root: Path | str | None = None,
    params_file: Path | str | None = None,
) -> ImageDataset:
    """Load ``folder:PATH``, decoding it into the cache first when the folder changed or is new.

    Args:
        name: ``folder:PATH`` (or just the path).
        image_size: Working size in pixels (default from params, 64).
        progress: Receives ``decode`` events.
        cancel: Checked between images.
        root: The data folder caches live in (default ``zeal_core.paths.data_dir()``).
        params_file: The params file (default ``zeal_core.data.settings.params_path()``).

    Raises:
        DataError: Missing folder, no class subfolders, or no readable image at all.
    """
    folder = folder_path(name)
    settings = folder_settings(image_size, params_file=params_file)
    images, name_skips, has_split = scan_folder(folder)
    cache = folder_cache_path(folder, settings, _listing_key(folder, [p for _, _, p in images], settings),
                              root=root)
    cached = load_cache(cache)
    if cached is not None:
        report(progress, "cached", 1, 1, f"{folder} already decoded")
        return cached
    items = ((slot, shown_name(path.relative_to(folder)), path) for slot, (_, _, path) in enumerate(images))
    result = decode_slots(items, len(images), settings.image_size, progress=progress, cancel=cancel)
    skipped = tuple(sorted(name_skips + list(result.skipped)))
    if result.images.shape[0] == 0:
        first = f" (first problem: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no readable image in {shown_name(folder)}{first}: use JPEG, PNG, BMP, GIF, WebP or "
                        "TIFF files")
    kept = [images[slot] for slot in result.kept.tolist()]
    class_names = tuple(sorted({class_name for _, class_name, _ in images}))
    labels_np = np.array([class_names.index(c) for _, c, _ in kept], dtype=np.int64)
    if has_split:
        is_val_np = np.array([split == "val" for split, _, _ in kept], dtype=bool)
    else:
        is_val_np = stratified_val_mask(labels_np, settings.val_fraction, settings.split_seed)
    labels, is_val = torch.from_numpy(labels_np), torch.from_numpy(is_val_np)
    dataset = ImageDataset(
        name=f"{PREFIX}{folder}",
        images=result.images,
        labels=labels,
        is_val=is_val,
        class_names=class_names,
        fingerprint=content_fingerprint(result.images, labels, is_val, class_names),
        skipped=skipped,
    )
    save_cache(dataset, cache)
    for stale in cache.parent.glob(f"{cache.name.rsplit('-', 1)[0]}-*"):  # older states of this folder
        if stale.with_suffix("") != cache:
            stale.unlink(missing_ok=True)
    return dataset
