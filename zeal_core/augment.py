"""Batch augmentation on the device: random-resized-crop and horizontal flip for a whole batch at once.

Every image of a batch gets its own crop box and flip, but the work is one ``affine_grid`` plus one
``grid_sample`` call for the batch, so it runs on the GPU (or vectorised on the CPU) with no Python loop
over images and no PIL. The input is the uint8 dataset tensor already on the device; the output is the
normalised float batch the model takes.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from zeal_core.errors import ConfigError
from zeal_core.models.factory import IMAGENET_MEAN, IMAGENET_STD

# Names accepted in ``TrainConfig.augmentations``.
KNOWN_AUGMENTATIONS = ("crop", "flip")


def check_augmentations(names: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` for an unknown augmentation name."""
    unknown = [name for name in names if name not in KNOWN_AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}: choose from {list(KNOWN_AUGMENTATIONS)}")


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """Resize a uint8 N x 3 x H x W tensor to ``size`` x ``size`` (antialiased), in chunks, on its device.

    Used once before training so that every later crop reads from images at about the training size
    (less memory traffic, and no aliasing when a large image is sampled down).
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8, device=images.device)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


@functools.cache
def _normalisation(device: torch.device, mean: tuple[float, ...] = IMAGENET_MEAN,
                   std: tuple[float, ...] = IMAGENET_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """(-mean / std, 1 / (255 std)) as 1 x 3 x 1 x 1 tensors on ``device``, made once per device and stats."""
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return -mean / std, 1.0 / (255.0 * std)


def crop_flip_grid(
    batch_size: int,
    out_size: int,
    *,
    device: torch.device,
    generator: torch.Generator | None,
    crop: bool = True,
    flip: bool = True,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Sampling grid (B x S x S x 2) for a random-resized-crop and flip of each image.

    Args:
        batch_size: Images in the batch.
        out_size: Output side in px.
        device: Where the grid lives.
        generator: Random source on ``device`` (seeded by the trainer, so runs repeat).
        crop: Sample a crop box per image (area share in ``scale``, aspect ratio in ``ratio``).
        flip: Mirror half of the images left-right.
        scale: Range of the crop's area as a share of the image.
        ratio: Range of the crop's width / height.
    """
    ones = torch.ones(batch_size, device=device)
    if crop:
        area = torch.empty(batch_size, device=device).uniform_(scale[0], scale[1], generator=generator)
        log_ratio = torch.empty(batch_size, device=device).uniform_(
            math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        aspect = log_ratio.exp()
        # Crop width and height as shares of the image side (1 = whole side).
        width = (area * aspect).sqrt().clamp(max=1.0)
        height = (area / aspect).sqrt().clamp(max=1.0)
        # Crop centre in normalised [-1, 1] coordinates, kept inside the image.
        centre_x = (torch.rand(batch_size, device=device, generator=generator) * 2 - 1) * (1 - width)
        centre_y = (torch.rand(batch_size, device=device, generator=generator) * 2 - 1) * (1 - height)
    else:
        width, height = ones, ones
        centre_x = centre_y = torch.zeros(batch_size, device=device)
    if flip:
        sign = torch.where(torch.rand(batch_size, device=device, generator=generator) < 0.5, -ones, ones)
        width = width * sign
    theta = torch.zeros(batch_size, 2, 3, device=device)
    theta[:, 0, 0] = width
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    return F.affine_grid(theta, [batch_size, 3, out_size, out_size], align_corners=False)


def augment_batch(
    images: torch.Tensor,
    out_size: int,
    *,
    generator: torch.Generator | None = None,
    augmentations: tuple[str, ...] = ("crop", "flip"),
    crop_scale: tuple[float, float] = (0.35, 1.0),
    channels_last: bool = False,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 batch on the device -> augmented, normalised float batch (B x 3 x ``out_size`` x ``out_size``).

    Args:
        images: uint8 B x 3 x H x W on the training device.
        out_size: Output side in px (the model's input size).
        generator: Random source on the images' device.
        augmentations: Any of ``"crop"`` (random-resized-crop) and ``"flip"`` (left-right mirror).
        crop_scale: Range of the crop's area as a share of the image.
        channels_last: Return channels-last memory (faster convolutions on CUDA).
        mean: Per-channel input mean in [0, 1] units (the model config's ``mean``).
        std: Per-channel input std in [0, 1] units (the model config's ``std``).
    """
    batch = images.float()
    crop, flip = "crop" in augmentations, "flip" in augmentations
    if crop or flip:
        grid = crop_flip_grid(images.shape[0], out_size, device=images.device, generator=generator,
                              crop=crop, flip=flip, scale=crop_scale)
        batch = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif batch.shape[-1] != out_size or batch.shape[-2] != out_size:
        batch = F.interpolate(batch, size=(out_size, out_size), mode="bilinear", antialias=True,
                              align_corners=False)
    # One fused step: x / 255 -> (x - mean) / std, i.e. x * (1 / (255 std)) - mean / std.
    offset, scale = _normalisation(batch.device, tuple(mean), tuple(std))
    batch = torch.addcmul(offset, batch, scale)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch
