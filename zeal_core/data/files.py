"""Image files named on a command line: files, folders (searched recursively) and glob patterns.

``find_images`` turns what a user typed into a sorted list of image files plus the reasons some names gave
nothing; ``decode_paths`` decodes them (in parallel, bad files skipped with their reason) to the working size
of a dataset, exactly as a folder dataset's images are decoded.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import torch

from zeal_core.data.decode import IMAGE_EXTENSIONS, decode_slots
from zeal_core.progress import CancelToken, ProgressCallback

GLOB_CHARACTERS = frozenset("*?[")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _folder_images(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    images, skipped = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if _is_image(path):
            images.append(path)
        else:
            skipped.append((str(path), f"not an image file name ending ({path.suffix or 'none'})"))
    return images, skipped


def find_images(patterns: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into image files (sorted, each once).

    Returns:
        (image paths, (name, reason) for every name that gave nothing or a file that is not an image). A
        file named directly is kept whatever its ending (the decoder then says whether it is an image).
    """
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for pattern in patterns:
        if any(character in pattern for character in GLOB_CHARACTERS):
            matches = [Path(match) for match in sorted(glob.glob(pattern, recursive=True))]
            files = [path for path in matches if path.is_file() and _is_image(path)]
            folders = [path for path in matches if path.is_dir()]
            for folder in folders:
                found_here, skipped_here = _folder_images(folder)
                files += found_here
                skipped += skipped_here
            if not files:
                skipped.append((pattern, "the pattern matches no image file"))
            found += files
            continue
        path = Path(pattern)
        if path.is_dir():
            files, skipped_here = _folder_images(path)
            skipped += skipped_here
            if not files:
                skipped.append((pattern, "the folder holds no image file"))
            found += files
        elif path.is_file():
            found.append(path)
        else:
            skipped.append((pattern, "no such file or folder"))
    unique = sorted(dict.fromkeys(path.resolve() for path in found))
    return unique, skipped


def decode_paths(paths: Sequence[Path], size: int, *, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Decode image files to uint8 K x 3 x size x size.

    Returns:
        (images, the path of each decoded row, (path, reason) for each file that could not be decoded).
    """
    items = ((slot, str(path), Path(path)) for slot, path in enumerate(paths))
    result = decode_slots(items, len(paths), size, progress=progress, cancel=cancel)
    names = [str(paths[slot]) for slot in result.kept]
    return result.images, names, list(result.skipped)
