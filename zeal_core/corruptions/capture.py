"""Capture-pipeline drift kinds: a new camera, new settings or a new resize chain (group ``capture``).

Light-level changes (white balance, exposure, vignetting) act in linear light: the sRGB curve is undone,
the light scaled, and the curve applied again, as a camera's processing would. Gamma acts on the encoded
values (that is what a wrong transfer curve does). Kinds with a direction (warmer or cooler, brighter or
darker) draw it per image from the registry's seeded generator; the severity sets the magnitude.

What each level means (level 0 = identity; levels in between interpolate linearly; set with
``python -m benchmarks drift-kinds`` so that level 3 costs the shared Imagenette model about what
ImageNet-C's level 3 costs; pixel sizes below are for 160 px images):

=============================  ======  ======  =======  =======  =======  ==========================
kind                           1       2       3        4        5        unit
=============================  ======  ======  =======  =======  =======  ==========================
white_balance (mired)          20      45      70       90       110      warmer: 5750 ... 3790 K;
                                                                          cooler: 7470 ... 22800 K
gamma (exponent or 1/it)       1.25    1.55    2.0      2.5      3.0      on encoded values
exposure (stops, + or -)       0.45    0.9     1.35     1.8      2.3      linear light x 2^(+-stops)
vignetting (corner light)      60 %    35 %    20 %     10 %     5 %      cos^4 law, linear light
resize_nearest (scale)         0.5     0.3     0.2      0.15     0.1      80 / 48 / 32 / 24 / 16 px
resize_bilinear (scale)        0.4     0.2     0.11     0.08     0.06     64 / 32 / 18 / 13 / 10 px
resize_bicubic (scale)         0.55    0.35    0.22     0.16     0.12     88 / 56 / 35 / 26 / 19 px
chroma_subsampling (factor)    3       8       22       40       80       chroma 53 / 20 / 7 / 4 / 2 px
=============================  ======  ======  =======  =======  =======  ==========================

- ``white_balance``: the light looks warmer (orange) or cooler (blue) than the 6500 K the image was balanced
  for, by the level's mired (10^6 / kelvin) shift; per-channel linear gains from the Planckian locus (Kim et
  al.'s fit), luminance kept.
- ``gamma``: encoded values raised to the exponent (darker mid-tones) or its reciprocal (brighter).
- ``exposure``: over- or under-exposed by the stops; over-exposed light clips at white.
- ``vignetting``: light ``1 / (1 + k^2 r^2)^2`` at radius ``r`` (1 at the corners), ``k`` set by the corner
  share: the natural fall-off of a wide lens.
- ``resize_*``: down to the scale of the side and back up with the same interpolation, no anti-aliasing
  (a cheap device's resizer). The three interpolations cost a model very different amounts at one scale
  (nearest and bicubic alias and ring, bilinear only blurs), hence one table each.
- ``chroma_subsampling``: YCbCr (JFIF), the two chroma planes averaged over factor x factor cells
  (JPEG's 4:2:0 is factor 2) and up-sampled bilinearly; luma untouched.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from zeal_core.corruptions._ops import level_params
from zeal_core.corruptions.registry import register_corruption

GROUP = "capture"

WHITE_BALANCE_MIRED = ((0.0,), (20.0,), (45.0,), (70.0,), (90.0,), (110.0,))  # shift from 6500 K, mired
GAMMA = ((1.0,), (1.25,), (1.55,), (2.0,), (2.5,), (3.0,))  # exponent (or its reciprocal) on values
EXPOSURE_STOPS = ((0.0,), (0.45,), (0.9,), (1.35,), (1.8,), (2.3,))  # factor 2^(+-stops) on linear light
VIGNETTING_CORNER = ((1.0,), (0.6,), (0.35,), (0.2,), (0.1,), (0.05,))  # share of light left at corners
# small side / side per interpolation: the three cost a model very different amounts at the same scale
RESIZE_NEAREST_SCALE = ((1.0,), (0.5,), (0.3,), (0.2,), (0.15,), (0.1,))
RESIZE_BILINEAR_SCALE = ((1.0,), (0.4,), (0.2,), (0.11,), (0.08,), (0.06,))
RESIZE_BICUBIC_SCALE = ((1.0,), (0.55,), (0.35,), (0.22,), (0.16,), (0.12,))
CHROMA_FACTOR = ((1.0,), (3.0,), (8.0,), (22.0,), (40.0,), (80.0,))  # chroma cell side in pixels

NEUTRAL_KELVIN = 6500.0  # the white point images are assumed balanced for
MIN_KELVIN, MAX_KELVIN = 1667.0, 25000.0  # where the Planckian-locus approximation holds
# CIE XYZ -> linear sRGB (D65)
_XYZ_TO_RGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
_LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 / sRGB luminance weights of linear light
# JFIF YCbCr (full range) from RGB in [0, 1], and back
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve undone (values in [0, 1])."""
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve (linear light clipped to [0, 1] first: over-exposed light saturates)."""
    values = values.clamp(0.0, 1.0)
    curved = 1.055 * values.clamp_min(1e-12) ** (1 / 2.4) - 0.055
    return torch.where(values <= 0.0031308, values * 12.92, curved)


def _random_signs(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """+1 or -1 per image, from the seeded generator."""
    return torch.randint(0, 2, (n,), generator=generator, device=device).float().mul_(2.0).sub_(1.0)


def _planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 chromaticity of a black body (Kim et al.'s cubic-spline fit, 1667-25000 K)."""
    t = 1000.0 / kelvin
    if kelvin <= 4000.0:
        x = -0.2661239 * t**3 - 0.2343589 * t**2 + 0.8776956 * t + 0.179910
    else:
        x = -3.0258469 * t**3 + 2.1070379 * t**2 + 0.2226347 * t + 0.240390
    if kelvin <= 2222.0:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif kelvin <= 4000.0:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


@functools.lru_cache(maxsize=256)
def white_gains(kelvin: float) -> tuple[float, float, float]:
    """Linear-light channel gains that make a 6500 K white look like a ``kelvin`` white (luminance kept)."""

    def white(k: float) -> tuple[float, ...]:
        x, y = _planckian_xy(min(max(k, MIN_KELVIN), MAX_KELVIN))
        xyz = (x / y, 1.0, (1.0 - x - y) / y)
        return tuple(sum(m * c for m, c in zip(row, xyz, strict=True)) for row in _XYZ_TO_RGB)

    target, neutral = white(kelvin), white(NEUTRAL_KELVIN)
    gains = [t / n for t, n in zip(target, neutral, strict=True)]
    luminance = sum(w * g for w, g in zip(_LUMA, gains, strict=True))
    return tuple(g / luminance for g in gains)


def shifted_kelvin(mired: float, warmer: bool) -> float:
    """The colour temperature ``mired`` micro-reciprocal degrees warmer (lower K) or cooler than 6500 K."""
    base = 1e6 / NEUTRAL_KELVIN
    return 1e6 / max(base + mired if warmer else base - mired, 1e6 / MAX_KELVIN)


@register_corruption("capture", "white balance off: the light warmer (orange) or cooler (blue) than 6500 K",
                     group=GROUP)
def white_balance(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (mired,) = level_params(WHITE_BALANCE_MIRED, severity)
    signs = _random_signs(images.shape[0], generator, images.device)
    table = torch.tensor([white_gains(shifted_kelvin(mired, warmer)) for warmer in (True, False)],
                         device=images.device)  # 2 x 3: warmer, cooler
    gains = table[(signs < 0).long()].view(-1, 3, 1, 1)
    return linear_to_srgb(srgb_to_linear(images) * gains)


@register_corruption("capture", "transfer curve changed: mid-tones darker or brighter (gamma)", group=GROUP)
def gamma(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (exponent,) = level_params(GAMMA, severity)
    signs = _random_signs(images.shape[0], generator, images.device)
    exponents = torch.exp(signs * math.log(exponent)).view(-1, 1, 1, 1)
    return images.clamp(0.0, 1.0) ** exponents


@register_corruption("capture", "exposure off: more or less light (stops), highlights clip", group=GROUP)
def exposure(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (stops,) = level_params(EXPOSURE_STOPS, severity)
    signs = _random_signs(images.shape[0], generator, images.device)
    factors = torch.exp2(signs * stops).view(-1, 1, 1, 1)
    return linear_to_srgb(srgb_to_linear(images) * factors)


@functools.lru_cache(maxsize=32)
def _radius_squared(h: int, w: int, device: str) -> torch.Tensor:
    """1 x 1 x H x W squared distance of pixel centres from the image centre, 1 at the corners."""
    v = torch.arange(h, dtype=torch.float32) + 0.5 - h / 2.0
    u = torch.arange(w, dtype=torch.float32) + 0.5 - w / 2.0
    squared = v.view(-1, 1) ** 2 + u.view(1, -1) ** 2
    return (squared / ((h / 2.0) ** 2 + (w / 2.0) ** 2)).view(1, 1, h, w).to(device)


def vignetting_gain(radius_squared: torch.Tensor, corner: float) -> torch.Tensor:
    """The cos^4 law of a lens: light ``1 / (1 + k^2 r^2)^2`` at radius ``r`` (1 at the corners), with ``k``
    chosen so that the corners keep the share ``corner``."""
    k_squared = corner ** -0.5 - 1.0
    return (1.0 + k_squared * radius_squared) ** -2


@register_corruption("capture", "vignetting: darker corners (the cos^4 fall-off of a wide lens)",
                     random=False, group=GROUP)
def vignetting(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (corner,) = level_params(VIGNETTING_CORNER, severity)
    h, w = images.shape[-2:]
    gain = vignetting_gain(_radius_squared(h, w, str(images.device)), corner)
    return linear_to_srgb(srgb_to_linear(images) * gain)


def _resize_chain(images: torch.Tensor, severity: float, mode: str,
                  table: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """Down to the level's share of the side and back, both with ``mode``, no anti-aliasing."""
    (scale,) = level_params(table, severity)
    h, w = images.shape[-2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    if small == (h, w):
        return images
    extra = {} if mode == "nearest-exact" else {"align_corners": False}
    down = F.interpolate(images, size=small, mode=mode, antialias=False, **extra)
    return F.interpolate(down, size=(h, w), mode=mode, **extra)


@register_corruption("capture", "down-sized and up-sized with nearest neighbour (blocky, aliased)",
                     random=False, group=GROUP)
def resize_nearest(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    return _resize_chain(images, severity, "nearest-exact", RESIZE_NEAREST_SCALE)


@register_corruption("capture", "down-sized and up-sized bilinearly (soft, aliased)", random=False,
                     group=GROUP)
def resize_bilinear(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    return _resize_chain(images, severity, "bilinear", RESIZE_BILINEAR_SCALE)


@register_corruption("capture", "down-sized and up-sized bicubically (soft, ringing, aliased)", random=False,
                     group=GROUP)
def resize_bicubic(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    return _resize_chain(images, severity, "bicubic", RESIZE_BICUBIC_SCALE)


def _colour_matrix(rows: tuple[tuple[float, ...], ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, device=device)


@register_corruption("capture", "chroma subsampling: colour kept at a coarser resolution than brightness",
                     random=False, group=GROUP)
def chroma_subsampling(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (factor,) = level_params(CHROMA_FACTOR, severity)
    h, w = images.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    if small == (h, w):
        return images
    ycc = torch.einsum("ij,njhw->nihw", _colour_matrix(_RGB_TO_YCC, images.device), images)
    chroma = F.interpolate(F.adaptive_avg_pool2d(ycc[:, 1:], small), size=(h, w), mode="bilinear",
                           align_corners=False)
    ycc = torch.cat((ycc[:, :1], chroma), 1)
    return torch.einsum("ij,njhw->nihw", _colour_matrix(_YCC_TO_RGB, images.device), ycc)
