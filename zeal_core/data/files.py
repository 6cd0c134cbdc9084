"""Image files named on a command line: files, folders (searched recursively) and glob patterns.

``find_images`` turns what a user typed into a sorted list of image files plus the reasons some names gave
nothing; ``decode_paths`` decodes them (in parallel, bad files skipped with their reason) to the working size
of a dataset, exactly as a folder dataset's images are decoded. A name that exists is used as it is, even
when it holds glob characters (``photos [2024]``); only a name that does not exist is read as a pattern.
``sample_paths`` caps a batch at a seeded random subset. ``shown_name`` makes any file name printable
(names that are not valid UTF-8 keep their odd bytes as ``\\xNN`` escapes).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zeal_core.data.decode import IMAGE_EXTENSIONS, decode_slots
from zeal_core.progress import CancelToken, ProgressCallback
from zeal_core.sampling import seeded_subset

GLOB_CHARACTERS = frozenset("*?[")


def shown_name(name: str | os.PathLike[str]) -> str:
    """``name`` as text that can be printed, encoded and stored: bytes that are not UTF-8 (kept by Python as
    lone surrogates) become ``\\xNN`` escapes, so one odd file name never crashes a page or a JSON writer."""
    text = os.fspath(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")
    return text


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
            skipped.append((shown_name(path), f"not an image file name ending ({path.suffix or 'none'})"))
    return images, skipped


def _glob(pattern: str) -> list[Path]:
    """Matches of a glob ``pattern``; a parent folder that exists is taken literally (``photos [2024]/*.png``
    globs inside that folder instead of reading ``[2024]`` as a character class)."""
    parent = Path(pattern).parent
    if str(parent) not in ("", ".") and parent.is_dir():
        pattern = os.path.join(glob.escape(str(parent)), Path(pattern).name)
    return [Path(match) for match in sorted(glob.glob(pattern, recursive=True))]


def find_images(patterns: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into image files (sorted, each once).

    Returns:
        (image paths, (name, reason) for every name that gave nothing or a file that is not an image). A
        file named directly is kept whatever its ending (the decoder then says whether it is an image).
    """
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for pattern in patterns:
        if not Path(pattern).exists() and any(character in pattern for character in GLOB_CHARACTERS):
            matches = _glob(pattern)
            files = [path for path in matches if path.is_file() and _is_image(path)]
            folders = [path for path in matches if path.is_dir()]
            for folder in folders:
                found_here, skipped_here = _folder_images(folder)
                files += found_here
                skipped += skipped_here
            if not files:
                skipped.append((shown_name(pattern), "the pattern matches no image file"))
            found += files
            continue
        path = Path(pattern)
        if path.is_dir():
            files, skipped_here = _folder_images(path)
            skipped += skipped_here
            if not files:
                skipped.append((shown_name(pattern), "the folder holds no image file"))
            found += files
        elif path.is_file():
            found.append(path)
        else:
            skipped.append((shown_name(pattern), "no such file or folder"))
    unique = sorted(dict.fromkeys(path.resolve() for path in found))
    return unique, skipped


def sample_paths(paths: Sequence[Path], limit: int,
                 seed: int = 0) -> tuple[list[Path], dict[str, Any] | None]:
    """At most ``limit`` of ``paths``: all of them, or a seeded random subset (in their order).

    Returns:
        (the paths kept, None when all are kept, else ``{"kept", "of", "seed", "source"}`` where ``source``
        says in words what the check tested, for its report).
    """
    if len(paths) <= limit:
        return list(paths), None
    kept = [paths[int(position)] for position in seeded_subset(len(paths), limit, seed)]
    source = (f"a random {limit:,} of {len(paths):,} images (seed {seed}; a batch is capped at "
              f"{limit:,}, ZEAL_MAX_CHECK_N or --max-images)")
    return kept, {"kept": limit, "of": len(paths), "seed": int(seed), "source": source}


def decode_paths(paths: Sequence[Path], size: int, *, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Decode image files to uint8 K x 3 x size x size.

    Returns:
        (images, the path of each decoded row, (path, reason) for each file that could not be decoded).
    """
    items = ((slot, str(path), Path(path)) for slot, path in enumerate(paths))
    result = decode_slots(items, len(paths), size, progress=progress, cancel=cancel)
    names = [shown_name(paths[slot]) for slot in result.kept]
    return result.images, names, [(shown_name(name), reason) for name, reason in result.skipped]
