"""Weather family: snow, frost, fog and spatter.

Random layers are built on the image's 224 px grid (``reference_grid``) with ImageNet-C's constants and
resized to the image, so flakes, drops and fog blobs keep their size relative to the image. Frost is the
exception: like ImageNet-C's photographs, its textures are cropped at the image's own pixel scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zeal_core.corruptions._ops import (
    blend_levels,
    box_blur3,
    fft_filter,
    gaussian_blur,
    gray,
    level_params,
    motion_kernels,
    normal,
    reference_grid,
    resize,
    single_torch_thread,
    spatial_scale,
    uniform,
)
from zeal_core.corruptions.frost_texture import frost_textures
from zeal_core.corruptions.registry import register_corruption

# (noise mean, noise std, zoom, threshold, motion radius px, motion sigma px, image weight), levels 1-5
SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10.0, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12.0, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12.0, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12.0, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12.0, 12.0, 0.55),
)
SNOW_ANGLE_DEG = (-135.0, -45.0)  # falling direction range
FROST = ((1.0, 0.0), (1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image, frost) weights
FROST_TEXTURE_MARGIN = 1.15  # texture side / image side, leaves room for a random crop
FROST_MIN_SIDE = 64  # px: textures are never made smaller (their structure needs room)
FOG = ((0.0, 2.0), (1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (strength, wibble decay)
# (noise mean, noise std, blur sigma px, threshold, intensity or mud sigma px, mud?), levels 1-5
SPATTER = (
    (0.65, 0.3, 4.0, 0.69, 0.6, 0),
    (0.65, 0.3, 3.0, 0.68, 0.6, 0),
    (0.65, 0.3, 2.0, 0.68, 0.5, 0),
    (0.65, 0.3, 1.0, 0.65, 1.5, 1),
    (0.67, 0.4, 1.0, 0.65, 1.5, 1),
)
WATER_RGB = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise drops
MUD_RGB = (63 / 255, 42 / 255, 20 / 255)  # brown mud
SPATTER_DISTANCE_CAP = 20.0  # px at 224 px: distance-to-rim is truncated here (OpenCV THRESH_TRUNC)
EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))  # shading filter on the drop distances


def _snow(images: torch.Tensor, params: tuple[float, ...], generator: torch.Generator) -> torch.Tensor:
    mean, std, zoom, threshold, radius, sigma, image_weight = params
    n, _, h, w = images.shape
    scale = spatial_scale(images)
    grid_h, grid_w = reference_grid(images)
    # ImageNet-C zooms the centre 1/zoom of a per-pixel noise field: draw just that part, then up-sample
    small_h, small_w = math.ceil(grid_h / zoom), math.ceil(grid_w / zoom)
    flakes = normal((n, 1, small_h, small_w), mean, std, generator, images.device)
    size = (max(h, round(small_h * zoom * scale)), max(w, round(small_w * zoom * scale)))
    flakes = F.interpolate(flakes, size=size, mode="bilinear", align_corners=True)[..., :h, :w]
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp(0.0, 1.0)
    angles = uniform((n,), *SNOW_ANGLE_DEG, generator, images.device)
    flakes = fft_filter(flakes, motion_kernels(radius * scale, sigma * scale, angles), mode="replicate")
    flakes = torch.round(flakes * 255.0) / 255.0
    whitened = torch.maximum(images, gray(images) * 1.5 + 0.5)  # snowy light: a brightened gray
    base = image_weight * images + (1.0 - image_weight) * whitened
    return base + flakes + flakes.flip(-2, -1)


@register_corruption("weather", "falling snow: bright streaks and a whitened scene")
def snow(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    if severity < 1.0:  # the snow layer has no identity setting: blend the clean image towards level 1
        return torch.lerp(images, _snow(images, SNOW[0], generator), severity)
    return _snow(images, level_params((SNOW[0], *SNOW), severity), generator)


@register_corruption("weather", "frost on the lens: a procedural ice texture blended in")
def frost(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    image_weight, frost_weight = level_params(FROST, severity)
    n, _, h, w = images.shape
    # textures at the image's own pixel scale: ImageNet-C crops its photographs at every image size (it
    # does not resize them), so their strength hardly depends on the size; resizing would smooth them away
    side = math.ceil(max(h, w, FROST_MIN_SIDE) * FROST_TEXTURE_MARGIN)
    bank = frost_textures(side, images.device)
    # per image: a random texture and a random image-sized crop of it
    choice = torch.randint(bank.shape[0], (n,), generator=generator, device=images.device)
    top = torch.randint(side - h + 1, (n,), generator=generator, device=images.device)
    left = torch.randint(side - w + 1, (n,), generator=generator, device=images.device)
    rows = top.view(n, 1, 1) + torch.arange(h, device=images.device).view(1, h, 1)
    cols = left.view(n, 1, 1) + torch.arange(w, device=images.device).view(1, 1, w)
    crops = bank[choice.view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)  # n x 3 x h x w
    return image_weight * images + frost_weight * crops


def plasma_fractal(count: int, map_size: int, decay: float, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """Diamond-square height maps (count x map_size x map_size) in [0, 1], ImageNet-C's ``plasma_fractal``."""
    maps = torch.zeros(count, map_size, map_size, device=device)
    step, wibble = map_size, 100.0
    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        maps[:, half::step, half::step] = squares / 4 + wibble * uniform(
            squares.shape, -wibble, wibble, generator, device)
        centres, corners = maps[:, half::step, half::step], maps[:, 0::step, 0::step]
        left_sum = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        maps[:, 0::step, half::step] = left_sum / 4 + wibble * uniform(left_sum.shape, -wibble, wibble,
                                                                       generator, device)
        top_sum = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        maps[:, half::step, 0::step] = top_sum / 4 + wibble * uniform(top_sum.shape, -wibble, wibble,
                                                                      generator, device)
        step, wibble = half, wibble / decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = maps - low
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


@register_corruption("weather", "fog: a plasma-fractal haze added, contrast lowered")
def fog(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    strength, decay = level_params(FOG, severity)
    n, _, h, w = images.shape
    grid_h, grid_w = reference_grid(images)
    map_size = 1 << (max(grid_h, grid_w) - 1).bit_length()  # next power of two, as ImageNet-C
    # the finest diamond-square levels only add detail finer than this image's pixels: a map 1 / pitch the
    # size, with the same wibble sequence, is the coarse lattice of the full map (pitch 1 at 224 px)
    pitch = 1 << max(0, math.floor(math.log2(1.5 / spatial_scale(images))))
    pitch = min(pitch, map_size // 2)
    haze = plasma_fractal(n, map_size // pitch, decay, generator, images.device)
    haze = haze[:, None, :math.ceil(grid_h / pitch), :math.ceil(grid_w / pitch)]
    haze = resize(haze, (h, w))
    max_value = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images + strength * haze) * max_value / (max_value + strength)


def _dilate(mask: torch.Tensor, square: bool) -> torch.Tensor:
    """One step of binary dilation (3 x 3 square or cross) of a bool mask by OR-ing shifted copies in place.

    Outside the image counts as False. In-place ORs on slices: fewer, cheaper ops than padding.
    """
    vertical = mask.clone()
    vertical[..., 1:, :] |= mask[..., :-1, :]
    vertical[..., :-1, :] |= mask[..., 1:, :]
    source = vertical if square else mask
    out = vertical.clone() if square else vertical
    out[..., 1:] |= source[..., :-1]
    out[..., :-1] |= source[..., 1:]
    return out


def _distance_to_rim(rim: torch.Tensor, cap: float) -> torch.Tensor:
    """Distance (px, capped) from every pixel to the nearest rim pixel (bool mask), by repeated dilation.

    Alternating square and cross dilations give octagonal distances, close to Euclidean. The distance is
    the number of steps a pixel was not reached yet: steps minus the steps it was reached.
    """
    reached = rim
    steps = math.ceil(cap)
    reached_steps = torch.zeros(rim.shape, dtype=torch.uint8, device=rim.device)
    for step in range(steps):
        reached_steps += reached
        if step < steps - 1:
            reached = _dilate(reached, square=step % 2 == 0)
    return (steps - reached_steps.float()).clamp_(max=cap)


def _filter3x3(images: torch.Tensor, kernel: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """Correlate with a 3 x 3 kernel, reflect-101 edges, as a sum of shifted copies (OpenCV ``filter2D``)."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    out = torch.zeros_like(images)
    for row in range(3):
        for col in range(3):
            if kernel[row][col]:
                out += kernel[row][col] * padded[..., row:row + h, col:col + w]
    return out


def _equalize(levels: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-image histogram equalisation of integer levels in [0, bins) to [0, 255] (``equalizeHist``)."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1).long().clamp(0, bins - 1)
    counts = torch.zeros(n, bins, device=levels.device).scatter_add_(1, flat, torch.ones_like(flat,
                                                                                              dtype=torch.float32))
    cdf = counts.cumsum(1)
    first = torch.where(counts > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    total = cdf[:, -1:]
    lut = torch.round((cdf - first) * 255.0 / (total - first).clamp_min(1.0)).clamp(0.0, 255.0)
    return torch.gather(lut, 1, flat).view_as(levels)


def _spatter_level(images: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    mean, std, blur_sigma, threshold, intensity, is_mud = SPATTER[level - 1]
    n, _, h, w = images.shape
    scale = spatial_scale(images)
    liquid = normal((n, 1, *reference_grid(images)), mean, std, generator, images.device)
    liquid = resize(gaussian_blur(liquid, blur_sigma), (h, w))
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if is_mud:
        mud = gaussian_blur((liquid > threshold).float(), intensity * scale)
        mud = torch.where(mud < 0.8, 0.0, mud)
        colour = torch.tensor(MUD_RGB, device=images.device).view(1, 3, 1, 1)
        return images * (1.0 - mud) + colour * mud
    # water drops: shaded by an embossed, equalised distance to the drop rims (ImageNet-C's Canny +
    # distance transform + equalizeHist + emboss; the rims are the dry pixels bordering a drop)
    wet = liquid > 0
    rim = _dilate(wet, square=True) & ~wet  # dry pixels next to a wet one
    cap = SPATTER_DISTANCE_CAP * scale
    distance = torch.floor(box_blur3(_distance_to_rim(rim, cap)))
    shading = _equalize(distance, math.ceil(cap) + 1)
    shading = torch.round(_filter3x3(shading, EMBOSS)).clamp(0.0, 255.0)
    shading = box_blur3(shading)
    drops = torch.floor(liquid * 255.0) * shading
    drops = drops / drops.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) * intensity
    colour = torch.tensor(WATER_RGB, device=images.device).view(1, 3, 1, 1)
    return images + drops * colour


@register_corruption("weather", "water drops (1-3) or mud (4-5) on the lens")
def spatter(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    if images.device.type != "cpu":
        return blend_levels(_spatter_level, images, severity, generator)
    # hundreds of small single-channel mask ops per chunk: with zeal_core's OMP_WAIT_POLICY=PASSIVE every
    # parallel op wakes a sleeping thread, which costs more than the op; one thread is ~1.6x faster here
    with single_torch_thread():
        return blend_levels(_spatter_level, images, severity, generator)
