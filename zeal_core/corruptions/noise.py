"""Noise family: gaussian, shot, impulse and speckle noise (no spatial constants, so no size scaling)."""

from __future__ import annotations

import torch

from zeal_core.corruptions._ops import level_params
from zeal_core.corruptions.registry import register_corruption

# Level 0 rows are the identity; levels 1-5 are ImageNet-C's constants.
GAUSSIAN_STD = ((0.0,), (0.08,), (0.12,), (0.18,), (0.26,), (0.38,))  # std of additive noise, image in [0, 1]
# shot noise: photons per unit intensity c; interpolated as 1 / c (the noise variance scale), 1/inf = identity
SHOT_INVERSE_PHOTONS = ((0.0,), (1 / 60,), (1 / 25,), (1 / 12,), (1 / 5,), (1 / 3,))
IMPULSE_AMOUNT = ((0.0,), (0.03,), (0.06,), (0.09,), (0.17,), (0.27,))  # fraction of values set to 0 or 1
SPECKLE_STD = ((0.0,), (0.15,), (0.2,), (0.35,), (0.45,), (0.6,))  # std of multiplicative noise


@register_corruption("noise", "additive Gaussian noise, independent per pixel and channel")
def gaussian_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (std,) = level_params(GAUSSIAN_STD, severity)
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return images + noise * std


@register_corruption("noise", "Poisson (photon counting) noise, as in low light")
def shot_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (inverse_photons,) = level_params(SHOT_INVERSE_PHOTONS, severity)
    photons = 1.0 / inverse_photons
    return torch.poisson(images * photons, generator=generator) * inverse_photons


@register_corruption("noise", "salt-and-pepper noise: random values set to black or white")
def impulse_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (amount,) = level_params(IMPULSE_AMOUNT, severity)
    draw = torch.rand(images.shape, generator=generator, device=images.device)
    # scikit-image's s&p: a fraction `amount` of values is replaced, half salt (1), half pepper (0)
    out = torch.where(draw < amount * 0.5, 0.0, images)
    return torch.where((draw >= amount * 0.5) & (draw < amount), 1.0, out)


@register_corruption("noise", "multiplicative Gaussian noise, stronger on bright pixels")
def speckle_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (std,) = level_params(SPECKLE_STD, severity)
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return images + images * noise * std
