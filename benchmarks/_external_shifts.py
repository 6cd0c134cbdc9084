"""Shifts made outside the lab's corruption code: an independent implementation (PIL and numpy only).

Everything fitted on synthetic shifts (the shift-calibrated estimator, the diagnosis's signatures and its
"unknown shift" rejection) has seen ``zeal_core.corruptions`` at work. Scoring it on shifts made by that same
code, even on kinds held out of the bank, flatters it: the pixel statistics of one implementation leak into
the next. These shifts are written here from scratch, never registered, never in any bank, and only ever
*scored*: realistic things that happen to production images.

=================  ====================================================================  ===============
name               what happens to the image                                             right family
=================  ====================================================================  ===============
photo_filter       a phone "vintage" filter: sepia colour matrix, lifted blacks, warm      digital
                   tint, faded saturation, soft vignette
screenshot         the image shrunk onto a web page: white page, grey header bar,          (none: unknown)
                   dark text lines around it (predictions collapse onto a few classes)
rain               rain streaks: slanted bright lines, blurred along their direction,       weather
                   over a darker, lower-contrast scene
sensor_noise       a small-sensor camera in low light: Poisson shot noise, Gaussian read   noise
                   noise and hot pixels in linear light, per-channel gains
capture_pipeline   a cheap capture chain: downscaled, upscaled, JPEG-encoded twice at low   digital
                   quality, then sharpened (unsharp mask)
overlay            heavy overlays: a translucent coloured banner, a watermark of blocks     (none: unknown)
                   and a sticker (predictions collapse)
lens_blur          an out-of-focus phone photo: a disc-shaped (box + Gaussian) blur         blur
=================  ====================================================================  ===============

``apply_external(images, name, severity, seed)`` takes and returns uint8 N x 3 x H x W tensors (any H, W);
severity is 1-5, each image draws its own random parts from ``seed``. ``EXTERNAL_SHIFTS`` maps a name to
its function and the families a diagnosis may name for it (empty: only "unknown shift" is right).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class ExternalShift:
    """One shift of this module: how to make it and what a diagnosis may call it."""

    make: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]  # H x W x 3 uint8 -> same
    families: tuple[str, ...]  # diagnosis families that count as right ("unknown shift" always does)
    collapses: bool  # made to send many images to a few classes (the prediction-collapse checks)


def _level(severity: float, values: tuple[float, ...]) -> float:
    """Linear interpolation of a per-level table (index 0 = severity 0 = identity)."""
    return float(np.interp(severity, np.arange(len(values)), values))


def _photo_filter(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    strength = _level(severity, (0.0, 0.25, 0.45, 0.65, 0.82, 1.0))
    x = image.astype(np.float64) / 255.0
    sepia = x @ np.array([[0.393, 0.349, 0.272], [0.769, 0.686, 0.534], [0.189, 0.168, 0.131]])
    x = (1 - strength) * x + strength * np.clip(sepia, 0, 1)
    x = 0.12 * strength + (1 - 0.2 * strength) * x  # lifted blacks, compressed highlights
    height, width = x.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    radius = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2)) / np.sqrt(2)
    x *= (1 - 0.45 * strength * radius ** 2)[..., None]
    x *= np.array([1.0 + 0.08 * strength, 1.0, 1.0 - 0.1 * strength]) * (1 + rng.normal(0, 0.02))
    return np.clip(255 * x, 0, 255).astype(np.uint8)


def _screenshot(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    share = _level(severity, (1.0, 0.7, 0.58, 0.48, 0.4, 0.32))  # the picture's side on the page
    page = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(page)
    bar = max(1, int(0.08 * height))
    draw.rectangle([0, 0, width, bar], fill=tuple(int(v) for v in rng.integers(60, 120, 3)))
    side_w, side_h = max(2, int(share * width)), max(2, int(share * height))
    left = int(rng.integers(1, max(2, width - side_w)))
    top = int(rng.integers(bar + 1, max(bar + 2, height - side_h)))
    page.paste(Image.fromarray(image).resize((side_w, side_h), Image.LANCZOS), (left, top))
    line = max(1, height // 24)
    for row in range(bar + 2 * line, height - line, 3 * line):  # text lines beside and under the picture
        for start, stop in ((1, left - 2), (left + side_w + 2, width - 1)):
            if stop - start > 3 and not top - line <= row <= top + side_h:
                end = start + int(rng.uniform(0.5, 1.0) * (stop - start))
                draw.rectangle([start, row, end, row + line - 1], fill=(40, 40, 40))
            elif stop - start > 3:
                draw.rectangle([start, row, start + int(rng.uniform(0.3, 1.0) * (stop - start)),
                                row + line - 1], fill=(70, 70, 70))
    return np.asarray(page)


def _rain(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    drops = int(_level(severity, (0, 0.004, 0.007, 0.011, 0.016, 0.022)) * height * width)
    length = max(2, int(_level(severity, (0, 0.08, 0.11, 0.14, 0.17, 0.2)) * height))
    angle = rng.uniform(-0.35, 0.35)
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(drops):
        x, y = rng.uniform(0, width), rng.uniform(-length, height)
        draw.line([(x, y), (x + length * np.sin(angle), y + length * np.cos(angle))],
                  fill=int(rng.integers(150, 230)), width=max(1, width // 128))
    blurred = layer.filter(ImageFilter.GaussianBlur(max(0.5, width / 200)))
    streaks = np.asarray(blurred, dtype=np.float64) / 255
    darker = _level(severity, (1.0, 0.92, 0.85, 0.78, 0.72, 0.65))
    x = image.astype(np.float64) / 255.0
    x = darker * (0.85 * x + 0.15 * x.mean())  # overcast: darker, flatter light
    x = x + (1 - x) * 0.8 * streaks[..., None]
    return np.clip(255 * x, 0, 255).astype(np.uint8)


def _sensor_noise(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    photons = _level(severity, (1e6, 120, 60, 30, 16, 9))  # full-well photons per unit of linear light
    read = _level(severity, (0, 0.006, 0.01, 0.016, 0.024, 0.035))
    x = (image.astype(np.float64) / 255.0) ** 2.2  # to linear light
    gains = 1 + rng.normal(0, 0.04, 3)
    x = rng.poisson(np.clip(x * gains, 0, None) * photons) / photons
    x = x + rng.normal(0, read, x.shape)
    hot = rng.random(x.shape[:2]) < _level(severity, (0, 0.001, 0.002, 0.004, 0.006, 0.01))
    x[hot] = 1.0
    return np.clip(255 * np.clip(x, 0, 1) ** (1 / 2.2), 0, 255).astype(np.uint8)


def _capture_pipeline(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    scale = _level(severity, (1.0, 0.8, 0.68, 0.56, 0.48, 0.42))
    quality = int(_level(severity, (95, 40, 27, 18, 13, 9)))
    picture = Image.fromarray(image)
    small = picture.resize((max(4, int(width * scale)), max(4, int(height * scale))), Image.BILINEAR)
    picture = small.resize((width, height), Image.BILINEAR)
    for attempt in range(2):  # encoded by the camera, then again by the upload path
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=max(2, quality + 10 * attempt - int(rng.integers(0, 3))))
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    picture = picture.filter(ImageFilter.UnsharpMask(radius=max(1, width // 80), percent=120, threshold=2))
    return np.asarray(picture)


def _overlay(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    cover = _level(severity, (0, 0.18, 0.28, 0.38, 0.48, 0.58))  # banner height share
    base = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    top = int(rng.uniform(0, 1 - cover) * height)
    draw.rectangle([0, top, width, top + int(cover * height)], fill=(*colour, 200))
    block = max(1, width // 20)
    for _ in range(int(4 + 6 * severity)):  # a watermark: light blocks like letters
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.rectangle([x, y, x + 2 * block, y + block], fill=(255, 255, 255, 110))
    radius = int(_level(severity, (0, 0.1, 0.14, 0.18, 0.22, 0.26)) * width)  # a round sticker
    cx, cy = int(rng.integers(radius, max(radius + 1, width - radius))), int(rng.integers(0, height))
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius],
                 fill=(*tuple(int(v) for v in rng.integers(0, 256, 3)), 255))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))


def _lens_blur(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    width = image.shape[1]
    radius = _level(severity, (0, 0.008, 0.014, 0.02, 0.028, 0.036)) * width * (1 + rng.normal(0, 0.05))
    picture = Image.fromarray(image)
    picture = picture.filter(ImageFilter.BoxBlur(max(0.0, radius)))
    return np.asarray(picture.filter(ImageFilter.GaussianBlur(max(0.0, 0.5 * radius))))


EXTERNAL_SHIFTS: dict[str, ExternalShift] = {
    "photo_filter": ExternalShift(_photo_filter, ("digital",), False),
    "screenshot": ExternalShift(_screenshot, (), True),
    "rain": ExternalShift(_rain, ("weather",), False),
    "sensor_noise": ExternalShift(_sensor_noise, ("noise",), False),
    "capture_pipeline": ExternalShift(_capture_pipeline, ("digital", "blur"), False),
    "overlay": ExternalShift(_overlay, (), True),
    "lens_blur": ExternalShift(_lens_blur, ("blur",), False),
}
PREFIX = "ext/"  # spec-like text of an external shift: "ext/rain:3"


def external_text(name: str, severity: float) -> str:
    """The name benchmarks give a shift of this module, e.g. ``ext/rain:3``."""
    return f"{PREFIX}{name}:{severity:g}"


def parse_external(text: str) -> tuple[str, float] | None:
    """(name, severity) of ``ext/name:severity``, or None for any other text."""
    if not text.startswith(PREFIX):
        return None
    name, _, severity = text[len(PREFIX):].partition(":")
    return name, float(severity)


def apply_external(images: torch.Tensor, name: str, severity: float, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 N x 3 x H x W) under the external shift ``name`` at ``severity`` (1-5).

    Raises:
        KeyError: An unknown name.
    """
    shift = EXTERNAL_SHIFTS[name]
    rng = np.random.default_rng(seed)
    arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    out = np.stack([shift.make(np.ascontiguousarray(image), float(severity), rng) for image in arrays])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
