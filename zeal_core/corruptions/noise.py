"""Noise family: gaussian, shot, impulse and speckle noise (no spatial constants, so no size scaling)."""

from __future__ import annotations

import functools
import math

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


POISSON_LEVELS = 255  # intensities are quantised to 1/255 (exact for uint8 images) to index the CDF tables
POISSON_GUIDE_BINS = 1024  # guide-table bins per intensity: the first guess is almost always the answer
POISSON_TAIL_SIGMAS = 12.0  # tables reach lambda + 12 sqrt(lambda) + 12 counts (the rest has mass < 1e-12)


@functools.lru_cache(maxsize=16)
def _poisson_tables(photons: float, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inversion tables for Poisson(lambda = photons * q / 255), q = 0 ... 255.

    Returns:
        (cdf, guide, values), all flat: ``cdf[q * M + m]`` is P(X <= m) (the last entry of a row is 2, a
        sentinel that stops the search inside the row); ``guide[q * B + b]`` is the flat index of the first
        count whose CDF exceeds ``b / B``; ``values[q * M + m]`` is ``m / photons``, the output value.
    """
    counts = math.ceil(photons + POISSON_TAIL_SIGMAS * math.sqrt(photons) + POISSON_TAIL_SIGMAS)
    lam = torch.arange(POISSON_LEVELS + 1, dtype=torch.float64).view(-1, 1) * (photons / POISSON_LEVELS)
    m = torch.arange(counts, dtype=torch.float64).view(1, -1)
    log_pmf = m * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(m + 1)
    log_pmf[0, 1:] = -math.inf  # lambda = 0: always 0 photons
    log_pmf[0, 0] = 0.0
    cdf = torch.exp(log_pmf).cumsum(1).clamp_max(1.0)
    cdf[:, -1] = 2.0
    rows = lam.shape[0]
    grid = (torch.arange(POISSON_GUIDE_BINS, dtype=torch.float64) / POISSON_GUIDE_BINS).expand(rows, -1)
    # first guess: the number of counts whose CDF is <= the bin's lower edge (never past the answer)
    guide = torch.searchsorted(cdf, grid.contiguous(), right=True) + torch.arange(rows).view(-1, 1) * counts
    values = (m / photons).expand(lam.shape[0], -1)
    return (cdf.float().flatten().to(device), guide.int().flatten().to(device),
            values.float().flatten().contiguous().to(device))


@register_corruption("noise", "Poisson (photon counting) noise, as in low light")
def shot_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (inverse_photons,) = level_params(SHOT_INVERSE_PHOTONS, severity)
    photons = 1.0 / inverse_photons
    # exact Poisson draws by inversion of tabulated CDFs (torch.poisson is ~5x slower on CPU): ImageNet-C's
    # lambda = intensity * photons is at most 60, so the tables are small; a guide table gives the first
    # guess and a couple of steps up the CDF finish the search
    cdf, guide, values = _poisson_tables(photons, str(images.device))
    draw = torch.rand(images.numel(), generator=generator, device=images.device)
    # flat table index: intensity level * bins + the draw's bin (exact integers in float32)
    index = images.reshape(-1).mul(POISSON_LEVELS).round_().clamp_(0, POISSON_LEVELS).mul_(POISSON_GUIDE_BINS)
    index = index.add_(draw.mul(POISSON_GUIDE_BINS).floor_()).int()
    position = guide.index_select(0, index)  # index_select: several times faster than advanced indexing
    # the guess is short of the answer for < 1% of the draws (bins holding a step of the CDF): step those up
    behind = torch.nonzero(cdf.index_select(0, position) <= draw).flatten()
    while behind.numel():
        position[behind] += 1
        behind = behind[cdf.index_select(0, position[behind]) <= draw[behind]]
    return values.index_select(0, position).view_as(images)


@register_corruption("noise", "salt-and-pepper noise: random values set to black or white")
def impulse_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (amount,) = level_params(IMPULSE_AMOUNT, severity)
    draw = torch.rand(images.shape, generator=generator, device=images.device)
    # scikit-image's s&p: a fraction `amount` of values is replaced, half salt (1), half pepper (0): draws
    # below amount / 2 map to 0, those in [amount / 2, amount) to 1 (a value of 2 from float rounding at the
    # top of the range is clipped to 1 by ``apply``)
    replaced = draw < amount
    return torch.where(replaced, draw.mul_(2.0 / max(amount, 1e-12)).floor_(), images)


@register_corruption("noise", "multiplicative Gaussian noise, stronger on bright pixels")
def speckle_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (std,) = level_params(SPECKLE_STD, severity)
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return noise.mul_(std).add_(1.0).mul_(images)  # images * (1 + std * noise), in place on the draws
