"""Blur family: defocus, glass, motion, zoom and gaussian blur.

Radii, sigmas and pixel displacements are ImageNet-C's 224 px constants times ``spatial_scale`` (side / 224);
zoom factors are relative already and are used as they are.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from zeal_core.corruptions._ops import (
    _filter_matrix,
    blend_levels,
    fft_filter,
    gaussian_kernel1d,
    level_params,
    motion_kernels,
    reference_grid,
    resize,
    spatial_scale,
    uniform,
)
from zeal_core.corruptions._ops import (
    gaussian_blur as _gaussian_filter,
)
from zeal_core.corruptions.registry import register_corruption

# (disk radius px, anti-alias blur sigma px) at 224 px; level 0 = no blur
DEFOCUS = ((0.0, 0.1), (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
# (blur sigma px, max displacement px, iterations) at 224 px, levels 1-5 (levels are blended, see glass_blur)
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
# (radius px, sigma px) of the one-sided motion kernel at 224 px; level 0 = a single tap
MOTION = ((0.0, 1.0), (10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
MOTION_ANGLE_DEG = 45.0  # the direction is uniform in [-45, 45) degrees per image
# zoom factors: arange(1, stop, step) per level 1-5 (relative, no scaling)
ZOOM = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
GAUSSIAN_SIGMA = ((0.0,), (1,), (2,), (3,), (4,), (6,))  # px at 224 px
# ImageNet-C's in-place swap scan often moves a pixel to a place the scan has not reached yet, which then
# carries it on again: we model that as a second random hop for this share of the pixels when the maximum
# displacement is 2 px or more (calibrated on mean SSIM against the reference at 224 px)
GLASS_CARRY_SHARE = 0.5


def _disk_kernel(radius: float, alias_sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised anti-aliased disk (1 x 1 x k x k); its soft rim makes it vary smoothly with the radius."""
    extent = math.ceil(radius) + 1
    offsets = torch.arange(-extent, extent + 1, device=device, dtype=torch.float32)
    distance = torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    disk = (radius + 0.5 - distance).clamp(0.0, 1.0)
    disk = disk / disk.sum()
    disk = _gaussian_filter(disk[None, None], alias_sigma, truncate=2.0, mode="replicate")
    return disk / disk.sum()


@register_corruption("blur", "out-of-focus lens: convolution with a disk", random=False)
def defocus_blur(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    radius, alias_sigma = level_params(DEFOCUS, severity)
    scale = spatial_scale(images)
    kernel = _disk_kernel(radius * scale, alias_sigma * scale, images.device)
    return fft_filter(images, kernel, mode="reflect")


@functools.lru_cache(maxsize=32)
def _resize_matrix(source: int, target: int, device: str) -> torch.Tensor:
    """target x source matrix of ``resize`` along one axis (bilinear, antialiased when shrinking)."""
    identity = torch.eye(source, dtype=torch.float32).view(1, 1, source, source)
    return resize(identity, (target, source))[0, 0].to(device)


def _glass_filters(size: int, grid: int, sigma: float,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) matrices along one axis: resize to the 224 px grid then blur; blur then resize back.

    Resizing and blurring are both linear along each axis, so each pair is one matrix and one product.
    """
    taps = gaussian_kernel1d(sigma, 4.0, torch.device("cpu"))
    blur = _filter_matrix(grid, tuple(float(t) for t in taps.double()), "replicate", str(device))
    if size == grid:
        return blur, blur
    return blur @ _resize_matrix(size, grid, str(device)), _resize_matrix(grid, size, str(device)) @ blur


def _glass_level(images: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    sigma, max_delta, iterations = GLASS[level - 1]
    n, c, height, width = images.shape
    scale = spatial_scale(images)
    # pixel swaps cannot shrink below one pixel: below 224 px, corrupt on the 224 px grid and resize back
    # (the resizes are folded into the two blurs' matrices)
    h, w = reference_grid(images) if scale < 1.0 else (height, width)
    scale = max(scale, 1.0)
    first_h, last_h = _glass_filters(height, h, sigma * scale, images.device)
    first_w, last_w = _glass_filters(width, w, sigma * scale, images.device)
    delta = max_delta * scale
    # blur, then quantise to uint8 as ImageNet-C does between the two blurs
    out = torch.floor((first_h @ (images @ first_w.T)).mul_(255.0)).div_(255.0)
    rows = torch.arange(h, device=images.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=images.device, dtype=torch.float32).view(1, 1, w)
    flat = out.reshape(n, c, h * w)
    carry = GLASS_CARRY_SHARE if max_delta >= 2 else 0.0

    # offsets are floor(uniform[-delta, delta)): for a whole delta, the 2 delta values -delta ... delta - 1
    whole = delta == int(delta)
    span = int(2 * delta)

    def hop() -> torch.Tensor:
        # every pixel takes the value of a random neighbour at offset in [-delta, delta) in each direction:
        # the flat source index of every pixel (n x h*w); index arithmetic in float32 (exact below 2^24,
        # and several times faster than int64 on CPU), converted once
        if whole:  # one draw gives both offsets, uniform over the span x span choices (half the RNG work)
            draw = torch.rand((n, h, w), generator=generator, device=images.device).mul_(span)
            dy = draw.floor()
            dx = draw.sub_(dy).mul_(span).floor_()  # the draw's next base-`span` digit
            dy, dx = dy.sub_(delta), dx.sub_(delta)
        else:
            dy = uniform((n, h, w), -delta, delta, generator, images.device).floor_()
            dx = uniform((n, h, w), -delta, delta, generator, images.device).floor_()
        source = dy.add_(rows).clamp_(0, h - 1).mul_(w).add_(dx.add_(cols).clamp_(0, w - 1))
        return source.view(n, h * w)  # float32 flat indices

    # the hops only move pixels, so they are composed as index maps (one int per pixel, not per channel)
    # and the pixels are gathered once at the end; same draws, same order, same result as hopping values
    source: torch.Tensor | None = None  # output pixel -> pixel of ``out`` it ends up with
    identity = torch.arange(h * w, device=images.device, dtype=torch.float32).view(1, h * w)
    for _ in range(iterations):
        step = hop()
        if carry:
            # 0 for the carried share (draw < carry), 1 for the rest; a 0/1 lerp weight is exact and much
            # faster than where() against the broadcast identity
            stays = torch.rand((n, h * w), generator=generator, device=images.device)
            stays = stays.add_(1.0 - carry).floor_()
            step = step.gather(1, torch.lerp(hop(), identity, stays).long())
        step = step.long()
        source = step if source is None else source.gather(1, step)
    if source is not None:
        flat = torch.gather(flat, 2, source.view(n, 1, h * w).expand(n, c, h * w))
    return last_h @ (flat.view(n, c, h, w) @ last_w.T)


@register_corruption("blur", "frosted glass: blur plus random local pixel shuffles")
def glass_blur(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    return blend_levels(_glass_level, images, severity, generator)


@register_corruption("blur", "camera shake: one-sided line kernel at a random angle per image")
def motion_blur(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    radius, sigma = level_params(MOTION, severity)
    scale = spatial_scale(images)
    angles = uniform((images.shape[0],), -MOTION_ANGLE_DEG, MOTION_ANGLE_DEG, generator, images.device)
    kernels = motion_kernels(radius * scale, sigma * scale, angles)
    return fft_filter(images, kernels, mode="replicate")


def _clipped_zoom(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Crop the centre 1/factor of the image and zoom it back up (scipy ``zoom``, order 1, top-left crop)."""
    h, w = images.shape[-2:]
    crop_h, crop_w = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = images[..., top:top + crop_h, left:left + crop_w]
    size = (max(h, round(crop_h * factor)), max(w, round(crop_w * factor)))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]


def _zoom_level(images: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    stop, step = ZOOM[level - 1]
    factors = np.arange(1.0, stop, step)  # numpy's arange, exactly ImageNet-C's list of factors
    total = images.clone()
    for factor in factors:
        total += images if factor == 1.0 else _clipped_zoom(images, float(factor))
    return total / (len(factors) + 1)


@register_corruption("blur", "zooming during exposure: average of centre zooms", random=False)
def zoom_blur(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    return blend_levels(_zoom_level, images, severity, generator)


@register_corruption("blur", "Gaussian blur", random=False)
def gaussian_blur(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (sigma,) = level_params(GAUSSIAN_SIGMA, severity)
    return _gaussian_filter(images, sigma * spatial_scale(images))
