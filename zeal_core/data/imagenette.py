"""Imagenette-160: download (or reuse) the archive, check it, decode it once into the uint8 cache.

Files under the data folder (``root``; default ``zeal_core.paths.data_dir()``):

- ``imagenette2-160.tgz``: the raw archive, kept (DVC tracks it; a mirror or a hand-placed copy works).
- ``imagenette/imagenette-<size>-<md5 prefix>-d<decode version>.{safetensors,json}``: the decoded cache,
  keyed by the archive's md5 and the working size, so it is reused until either changes.

The archive is never unpacked to disk: its members are checked like a safe extraction would check them
(no absolute paths, no ``..``, no links or devices, bounded total size and ratio), then read front to back
straight into the decoder. That keeps only the archive and the cache on disk and leaves nothing half
written when something fails.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import torch

from zeal_core.data.dataset import ImageDataset, content_fingerprint, load_cache, save_cache
from zeal_core.data.decode import DECODE_VERSION, MAX_FILE_BYTES, decode_slots
from zeal_core.data.download import checked_members, download_file, file_md5
from zeal_core.data.settings import ImagenetteSettings, data_root, imagenette_settings
from zeal_core.errors import DataError
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

ARCHIVE_NAME = "imagenette2-160.tgz"
PREPARE_COMMAND = "zeal data prepare --dataset imagenette"
# ImageNet WordNet ids of the ten Imagenette classes and their readable names.
WNID_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
SPLITS = ("train", "val")


def archive_path(root: Path | str | None = None) -> Path:
    """Where the raw archive lives under the data folder ``root`` (also where to put a copy by hand)."""
    return data_root(root) / ARCHIVE_NAME


def cache_path(settings: ImagenetteSettings, root: Path | str | None = None) -> Path:
    """The decoded cache's path without suffix, keyed by archive md5, working size and decode version."""
    name = f"imagenette-{settings.image_size}-{settings.md5[:16]}-d{DECODE_VERSION}"
    return data_root(root) / "imagenette" / name


def _mirror_hint(root: Path | str | None) -> str:
    return (f"To use a mirror, set ZEAL_IMAGENETTE_URL to its URL (or a local file path) and "
            f"ZEAL_IMAGENETTE_MD5 to its md5; or place the archive yourself at {archive_path(root)} "
            f"(with ZEAL_IMAGENETTE_MD5 set to its md5 if it is not fast.ai's), then run: {PREPARE_COMMAND}")


def is_imagenette_prepared(image_size: int | None = None, *, root: Path | str | None = None,
                           params_file: Path | str | None = None) -> bool:
    """True when the decoded cache for the configured archive and size exists (cheap: no decoding).

    Args:
        image_size: Working size in pixels (default from the params file).
        root: The data folder (default ``zeal_core.paths.data_dir()``).
        params_file: The params file (default ``zeal_core.data.settings.params_path()``).
    """
    path = cache_path(imagenette_settings(image_size, params_file=params_file), root)
    return path.with_suffix(".json").is_file() and path.with_suffix(".safetensors").is_file()


def load_imagenette(image_size: int | None = None, *, root: Path | str | None = None,
                    params_file: Path | str | None = None) -> ImageDataset:
    """Load the prepared cache from the data folder ``root``; never downloads or decodes.

    Raises:
        DataError: Not prepared yet (the message says how to prepare it).
    """
    settings = imagenette_settings(image_size, params_file=params_file)
    dataset = load_cache(cache_path(settings, root))
    if dataset is None:
        archive = archive_path(root)
        present = (f" The archive is already at {archive}; prepare will only check and decode it."
                   if archive.is_file() else "")
        raise DataError(f"imagenette is not prepared (no cache for md5 {settings.md5}, size "
                        f"{settings.image_size}): run `{PREPARE_COMMAND}` or use the Data page's Download "
                        f"button.{present}")
    return dataset


def download_imagenette(
    image_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    root: Path | str | None = None,
    params_file: Path | str | None = None,
) -> tuple[Path, bool]:
    """Make sure the verified archive is at ``archive_path(root)``; download it only when needed.

    Args:
        image_size: Working size in pixels (only read to check the settings).
        progress: Receives ``download``/``verify`` events.
        cancel: Checked between chunks.
        root: The data folder (default ``zeal_core.paths.data_dir()``).
        params_file: The params file naming the URL and md5 (default ``params_path()``).

    Returns:
        The archive path, and whether it was downloaded by this call.

    Raises:
        DataError: Download failed or the checksum does not match (nothing is left behind).
    """
    settings = imagenette_settings(image_size, params_file=params_file)
    path = archive_path(root)
    if path.is_file():
        if file_md5(path, progress, cancel) == settings.md5:
            return path, False
        report(progress, "download", 0, None, f"{path} does not match md5 {settings.md5}; downloading again")
    download_file(settings.url, path, settings.md5, progress=progress, cancel=cancel,
                  fix_hint=_mirror_hint(root))
    return path, True


def _class_name(wnid: str) -> str:
    return WNID_NAMES.get(wnid, wnid)


def read_archive(
    path: Path,
    image_size: int,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ImageDataset:
    """Check every member of an Imagenette-style archive, then decode its ``train/`` and ``val/`` images.

    The layout is ``[top/]{train,val}/<wnid>/<image>``; other members (e.g. a CSV) are ignored.

    Raises:
        DataError: The archive is damaged or unsafe, or holds no images in that layout.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            report(progress, "check", 0, None, f"checking members of {path.name}")
            members = checked_members(tar, path)
            entries: list[tuple[str, str, str, tarfile.TarInfo]] = []  # split, wnid, name, member
            for member in members:
                parts = PurePosixPath(member.name).parts
                if (member.isfile() and len(parts) >= 3 and parts[-3] in SPLITS
                        and not parts[-1].startswith(".")):
                    entries.append((parts[-3], parts[-2], member.name, member))
            if not entries:
                raise DataError(f"{path} holds no images under train/<class>/ or val/<class>/: is it really "
                                "Imagenette? Check ZEAL_IMAGENETTE_URL.")
            wnids = sorted({wnid for _, wnid, _, _ in entries})
            # Dataset order is sorted (split, class, file name); the archive is read in its own order
            # (a gzip stream cannot seek back cheaply), each image decoded into its sorted slot.
            ordered = sorted(range(len(entries)), key=lambda i: entries[i][:3])
            slot_of = {index: slot for slot, index in enumerate(ordered)}

            def members_in_archive_order() -> Iterator[tuple[int, str, bytes]]:
                for index, (_, _, name, member) in enumerate(entries):
                    check_cancel(cancel)
                    if member.size > MAX_FILE_BYTES:
                        data = b""  # decoder skips it as empty; huge members are never read into memory
                    else:
                        handle = tar.extractfile(member)
                        data = handle.read() if handle is not None else b""
                    yield slot_of[index], name, data

            result = decode_slots(members_in_archive_order(), len(entries), image_size,
                                  progress=progress, cancel=cancel)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        # tarfile lists one reason per compression method on separate lines; keep the message on one line.
        reason = "; ".join(line.strip(" -") for line in str(error).splitlines() if line.strip(" -"))
        raise DataError(f"cannot read archive {path}: {reason}. It is damaged: delete it and run "
                        f"`{PREPARE_COMMAND}` again.") from None
    if result.images.shape[0] == 0:
        raise DataError(f"no image in {path} could be decoded (first problem: {result.skipped[0]})")
    kept = [entries[ordered[slot]] for slot in result.kept.tolist()]
    labels = torch.tensor([wnids.index(wnid) for _, wnid, _, _ in kept], dtype=torch.int64)
    is_val = torch.tensor([split == "val" for split, _, _, _ in kept], dtype=torch.bool)
    class_names = tuple(_class_name(wnid) for wnid in wnids)
    report(progress, "fingerprint", 0, None, "hashing decoded images")
    fingerprint = content_fingerprint(result.images, labels, is_val, class_names)
    return ImageDataset(name="imagenette", images=result.images, labels=labels, is_val=is_val,
                        class_names=class_names, fingerprint=fingerprint, skipped=result.skipped)


def _remove_other_caches(keep: Path) -> None:
    """Delete caches of the same size made from another archive or decode version (about 1 GB each)."""
    prefix = keep.name.split("-")[0] + "-" + keep.name.split("-")[1] + "-"
    for stale in keep.parent.glob(f"{prefix}*"):
        if stale.with_suffix("") != keep and stale.suffix in (".json", ".safetensors"):
            stale.unlink(missing_ok=True)


def prepare_imagenette(
    image_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    root: Path | str | None = None,
    params_file: Path | str | None = None,
) -> ImageDataset:
    """Download (if needed), verify, check and decode Imagenette; a second call only loads the cache.

    Args:
        image_size: Working size in pixels (default from the params file).
        progress: Receives ``download``/``verify``/``decode``/``save`` events.
        cancel: Checked between chunks and images.
        root: The data folder the archive and the cache live in (default ``zeal_core.paths.data_dir()``).
        params_file: The params file (default ``zeal_core.data.settings.params_path()``).

    Raises:
        DataError: No network, wrong checksum, truncated download or unsafe archive; the message names
            the cause and the fix, and nothing partial is left under the data folder.
        Cancelled: ``cancel`` was set.
    """
    settings = imagenette_settings(image_size, params_file=params_file)
    cache = cache_path(settings, root)
    if is_imagenette_prepared(image_size, root=root, params_file=params_file):
        dataset = load_cache(cache)
        if dataset is not None:
            report(progress, "cached", 1, 1, f"imagenette already prepared ({cache.name})")
            return dataset
    path, downloaded = download_imagenette(image_size, progress, cancel, root=root, params_file=params_file)
    try:
        dataset = read_archive(path, settings.image_size, progress, cancel)
    except DataError:
        if downloaded:  # an archive that fails its checks is no use: leave nothing behind
            path.unlink(missing_ok=True)
        raise
    report(progress, "save", 0, None, f"writing {cache.name}.safetensors")
    save_cache(dataset, cache)
    _remove_other_caches(cache)
    report(progress, "save", 1, 1, f"imagenette prepared: {dataset.images.shape[0]:,} images")
    return dataset
