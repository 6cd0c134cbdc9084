"""Decode image files into one uint8 N x 3 x S x S tensor, in parallel, skipping (and naming) bad files.

Every source goes through here: archive members (Imagenette), files in a folder, and uploaded bytes. Each
image is converted to 8-bit RGB, resized so its shorter side is S (antialiased) and center-cropped to S x S.
A file that cannot be decoded is skipped with a reason; nothing here raises for a bad image.

Decoding runs on a thread pool: Pillow releases the GIL while it decodes and resizes, so threads use every
core without the cost of copying pixels between processes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

# Bump when decoding changes (resampling, cropping, colour conversion): caches keyed on it are rebuilt.
DECODE_VERSION = 1
# Images above this many pixels are skipped as possible decompression bombs (50 MP, a 8,660 px square).
# Checked from the header, before any pixel is decoded; Pillow's own limit (about 179 MP) stays as a backstop.
MAX_IMAGE_PIXELS = 50_000_000
# Files above this size (bytes) are skipped before they are read, so one huge file cannot fill memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# File name endings treated as images when scanning a folder (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# Images handed to the pool ahead of the ones finished, per worker: bounds memory held in encoded bytes.
_IN_FLIGHT_PER_WORKER = 16
# Colour drawn under transparent pixels (white, like a page or a web background).
_BACKGROUND = (255, 255, 255)


class SkipImage(Exception):
    """One file cannot be used; ``str(error)`` is the reason shown to the user."""


@dataclass(frozen=True)
class DecodeResult:
    """The images that decoded, in slot order, and the ones that did not."""

    images: torch.Tensor  # uint8, K x 3 x S x S, the decodable images in slot order
    kept: np.ndarray  # int64, K: the slot of each row of ``images``
    skipped: tuple[tuple[str, str], ...]  # (file name, reason), in slot order


def default_workers() -> int:
    """Threads for decoding: every core this process may run on."""
    from zeal_core.settings import cpu_cores

    return cpu_cores()


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16- or 32-bit greyscale image to 8 bits (Pillow's own convert clips at 255 instead)."""
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or 255.0 < peak <= 65535.0:
        values = values / 257.0  # 65535 -> 255
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0  # floats in [0, 1]
    elif peak > 65535.0:
        values = values * (255.0 / peak)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Greyscale and palette images are expanded, transparency is drawn over white, CMYK is converted,
    and 16-bit greyscale is scaled (not clipped) to 8 bits.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _sixteen_bit_to_l(image).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` px (antialiased when shrinking) and cut the centre square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    # One resample from the centre square of the source: Pillow widens the filter when it shrinks,
    # which is the antialiasing.
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def decode_image(data: bytes, size: int, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode one encoded image to a ``size`` x ``size`` x 3 uint8 array.

    Args:
        data: The file's bytes.
        size: Working size in pixels.
        max_pixels: Larger images are refused without decoding them.

    Raises:
        SkipImage: The bytes are empty, not an image, damaged, truncated, or too large.
    """
    if not data:
        raise SkipImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise SkipImage(f"too many pixels ({width} x {height} > {max_pixels:,}); "
                                "possible decompression bomb")
            if image.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result still covers size x size.
                image.draft(image.mode, (size, size))
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            rgb = resize_center_crop(to_rgb8(upright), size)
            array = np.asarray(rgb, dtype=np.uint8)
    except SkipImage:
        raise
    except Image.DecompressionBombError as error:
        raise SkipImage(f"possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise SkipImage("not an image Pillow can read (unknown or damaged header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as error:
        raise SkipImage(f"damaged or truncated image: {error}") from None
    except Exception as error:  # any other decoder failure must skip one file, never stop the whole run
        raise SkipImage(f"could not decode: {type(error).__name__}: {error}") from None
    if array.shape != (size, size, 3):
        raise SkipImage(f"decoded to an unexpected shape {array.shape}")
    return array


def _read_source(source: bytes | Path) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            file_size = source.stat().st_size
            if file_size > MAX_FILE_BYTES:
                raise SkipImage(f"file too large ({file_size:,} bytes > {MAX_FILE_BYTES:,})")
            data = source.read_bytes()
        except OSError as error:
            raise SkipImage(f"cannot read file: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SkipImage(f"file too large ({len(data):,} bytes > {MAX_FILE_BYTES:,})")
    return data


def decode_slots(
    items: Iterable[tuple[int, str, bytes | Path]],
    count: int,
    size: int,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    workers: int | None = None,
    stage: str = "decode",
) -> DecodeResult:
    """Decode ``count`` images into their slots, in parallel.

    The iterator may be lazy (an archive read front to back): it is consumed on this thread while the pool
    decodes, with a bounded number of images in flight.

    Args:
        items: ``(slot, name, source)`` with every slot in ``range(count)`` once; ``source`` is the encoded
            bytes or a path to read in the worker.
        count: Number of slots.
        size: Working size in pixels.
        progress: Receives ``stage`` events counted in images.
        cancel: Checked between images.
        workers: Threads; default every core.
        stage: Stage name in the progress events.

    Raises:
        Cancelled: ``cancel`` was set.
    """
    workers = workers or default_workers()
    output = torch.empty((count, 3, size, size), dtype=torch.uint8)
    pixels = output.numpy()  # shares memory with ``output``: workers write their slot in place
    ok = np.zeros(count, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    report_every = max(1, count // 200)
    finished = 0

    def work(slot: int, name: str, source: bytes | Path) -> tuple[int, str, str | None]:
        try:
            pixels[slot] = decode_image(_read_source(source), size).transpose(2, 0, 1)
        except SkipImage as error:
            return slot, name, str(error)
        return slot, name, None

    def collect(done: set[Future]) -> None:
        nonlocal finished
        for future in done:
            slot, name, reason = future.result()
            if reason is None:
                ok[slot] = True
            else:
                reasons[slot] = (name, reason)
            finished += 1
            if finished % report_every == 0 or finished == count:
                report(progress, stage, finished, count, f"{finished:,} / {count:,} images")

    report(progress, stage, 0, count, f"decoding {count:,} images on {workers} threads")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zeal-decode")
    pending: set[Future] = set()
    try:
        for slot, name, source in items:
            check_cancel(cancel)
            if not 0 <= slot < count:
                raise IndexError(f"slot {slot} outside 0..{count - 1}")
            pending.add(pool.submit(work, slot, name, source))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        while pending:
            check_cancel(cancel)
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            collect(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    kept = np.flatnonzero(ok).astype(np.int64)
    images = output if kept.size == count else output[torch.from_numpy(kept)]
    skipped = tuple(reasons[slot] for slot in sorted(reasons))
    return DecodeResult(images=images, kept=kept, skipped=skipped)


def decode_images(
    items: list[tuple[str, bytes]],
    size: int,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Decode uploaded files (name, bytes) into one uint8 K x 3 x size x size tensor.

    Rows keep the order of ``items``, minus the skipped ones.

    Args:
        items: ``(file name, file bytes)`` pairs, e.g. from ``st.file_uploader``.
        size: Working size in pixels (use the model's image size).
        progress: Receives ``decode`` events counted in images.
        cancel: Checked between images.

    Returns:
        The decoded images and ``(file name, reason)`` for each file that was skipped.
    """
    result = decode_slots(((slot, name, data) for slot, (name, data) in enumerate(items)), len(items),
                          size, progress=progress, cancel=cancel)
    return result.images, list(result.skipped)
