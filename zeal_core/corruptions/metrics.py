"""How far corrupted images are from clean ones: a small batched SSIM (Wang et al. 2004)."""

from __future__ import annotations

import torch

from zeal_core.corruptions._ops import gaussian_blur, gray

SSIM_SIGMA = 1.5  # px, Gaussian window of the local statistics (the paper's 11 x 11 window)
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilising constants, as fractions of the data range


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Structural similarity of each image to its reference, on luma, one value per image.

    Args:
        images: N x 3 x H x W, uint8 in [0, 255] or float in [0, 1].
        reference: the same shape and range (e.g. the clean images).

    Returns:
        float32 tensor of N values; 1 means identical, lower means more different.
    """
    x, y = gray(_as_unit_float(images)), gray(_as_unit_float(reference))
    c1, c2 = SSIM_K1**2, SSIM_K2**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(t, SSIM_SIGMA, truncate=3.5, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.mean(dim=(1, 2, 3))
