"""Procedural frost textures (ImageNet-C ships six photographs of frost; nothing is downloaded here).

Each texture is a pale, bluish ice colour with two kinds of structure, both made from smoothed noise:
large soft patches (fractal noise, where the ice is thicker) and thin crinkled ridges (the zero crossings of
band-limited noise turned into bright lines, like the creased ice in the photographs). Texture ``i`` gets the
mean colour and contrast of ImageNet-C's photograph ``i`` (measured once, hard-coded below), so the corruption
darkens and whitens images about as much as the original. The bank is deterministic (its own fixed seed, not
the caller's) and cached per device and size.
"""

from __future__ import annotations

import torch

from zeal_core.corruptions._ops import gaussian_blur, resize

# mean RGB and standard deviation of ImageNet-C's frost photographs 1-5 (the ones its code draws from)
FROST_COLOURS = (
    ((0.305, 0.585, 0.650), 0.08),
    ((0.787, 0.805, 0.841), 0.087),
    ((0.787, 0.805, 0.841), 0.087),
    ((0.540, 0.599, 0.648), 0.113),
    ((0.441, 0.484, 0.529), 0.169),
)
TEXTURE_SEED = 20190301  # fixed: the bank is part of the corruption's definition, not of the caller's draw
PATCH_SHARE = 0.75  # share of the texture's variance in the large soft patches; the rest is ridges
# contrast relative to the photographs' standard deviation: matched on mean SSIM against the reference on
# Imagenette val (without it the procedural textures corrupt about 0.03 SSIM less)
CONTRAST_GAIN = 1.2

_BANK: dict[tuple[str, int], torch.Tensor] = {}


def _smooth_noise(count: int, size: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise smoothed at ``sigma`` px and standardised per map (count x 1 x size x size)."""
    coarse = max(4, round(size / max(sigma, 1.0) * 2))  # draw coarse, blur, up-sample: cheap large sigmas
    noise = torch.randn((count, 1, coarse, coarse), generator=generator)
    field = resize(gaussian_blur(noise, 1.0, mode="reflect"), (size, size))
    field = field - field.mean(dim=(2, 3), keepdim=True)
    return field / field.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def _ridges(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Thin bright crinkle lines at several scales, standardised (count x 1 x size x size)."""
    total = torch.zeros(count, 1, size, size)
    for sigma, sharpness in ((10.0, 6.0), (5.0, 8.0), (2.5, 10.0)):
        field = _smooth_noise(count, size, sigma, generator)
        total += torch.exp(-sharpness * field.abs())  # 1 on the zero crossings, falling off fast
    total = total - total.mean(dim=(2, 3), keepdim=True)
    return total / total.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def generate_frost_textures(size: int = 256, count: int = len(FROST_COLOURS)) -> torch.Tensor:
    """A bank of ``count`` RGB frost textures, float in [0, 1], count x 3 x size x size, on the CPU."""
    generator = torch.Generator().manual_seed(TEXTURE_SEED)
    patches = sum(_smooth_noise(count, size, sigma, generator) * weight
                  for sigma, weight in ((48.0, 0.7), (20.0, 0.5), (8.0, 0.3)))
    patches = patches / patches.std(dim=(2, 3), keepdim=True)
    structure = PATCH_SHARE**0.5 * patches + (1 - PATCH_SHARE) ** 0.5 * _ridges(count, size, generator)
    textures = []
    for index in range(count):
        colour, std = FROST_COLOURS[index % len(FROST_COLOURS)]
        mean = torch.tensor(colour).view(3, 1, 1)
        # ice is whiter where it is thicker: bright structure pulls every channel up, blue a little less
        tint = torch.tensor((1.0, 0.9, 0.8)).view(3, 1, 1)
        textures.append(mean + CONTRAST_GAIN * std * structure[index] * tint)
    return torch.stack(textures).clamp(0.0, 1.0)


def frost_textures(size: int, device: torch.device) -> torch.Tensor:
    """The cached texture bank at ``size`` px on ``device`` (generated on the first call)."""
    key = (str(device), size)
    if key not in _BANK:
        _BANK[key] = generate_frost_textures(size).to(device)
    return _BANK[key]
