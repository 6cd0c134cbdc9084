"""Screening image files before anything heavy happens: a file that cannot be an image is named and left
out before the model is loaded (a cron job given a folder of logs fails in milliseconds, not seconds).

Only each file's header is read (Pillow identifies the format and the pixel count without decoding);
the full decode, with its own checks, comes later at the model's working size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zeal_core.data.decode import MAX_FILE_BYTES, MAX_IMAGE_PIXELS


def screen_image(path: Path) -> str | None:
    """Why ``path`` cannot be an image we decode, or None when its header looks like one."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except OSError as error:
        return f"cannot read file: {error.strerror or error}"
    if size == 0:
        return "empty file (0 bytes)"
    if size > MAX_FILE_BYTES:
        return f"file too large ({size:,} bytes > {MAX_FILE_BYTES:,})"
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except UnidentifiedImageError:
        return "not an image Pillow can read (unknown or damaged header)"
    except Image.DecompressionBombError as error:
        return f"possible decompression bomb: {error}"
    except Exception as error:  # any header failure skips this one file
        return f"damaged image header: {type(error).__name__}: {error}"
    if width * height > MAX_IMAGE_PIXELS:
        return f"too many pixels ({width} x {height} > {MAX_IMAGE_PIXELS:,}); possible decompression bomb"
    return None


def screen_images(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(paths whose header is an image's, (path, reason) for the others), order kept."""
    kept, skipped = [], []
    for path in paths:
        reason = screen_image(Path(path))
        if reason is None:
            kept.append(Path(path))
        else:
            skipped.append((str(path), reason))
    return kept, skipped
