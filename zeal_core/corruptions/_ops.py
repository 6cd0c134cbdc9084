"""Batched building blocks shared by the corruption families (all on float images in [0, 1], N x C x H x W).

Scaling rule used across the package: ImageNet-C's spatial constants are in pixels of a 224 px image, so a
constant ``c`` becomes ``c * spatial_scale(images)`` with ``spatial_scale = min(H, W) / 224``. Random layers
that are thresholded (snow, spatter) or smoothed white noise (elastic) are generated on a "224 px grid"
(``reference_grid``) with the original constants and then resized, so their structure keeps its size relative
to the image.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

REFERENCE_SIDE = 224  # px: ImageNet-C's constants are tuned for 224 x 224 images

# ITU-R BT.601 luma weights (what OpenCV's RGB2GRAY and JPEG's Y use)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

CorruptionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def spatial_scale(images: torch.Tensor) -> float:
    """How many pixels of these images one pixel of a 224 px ImageNet-C image corresponds to."""
    return min(images.shape[-2:]) / REFERENCE_SIDE


def reference_grid(images: torch.Tensor) -> tuple[int, int]:
    """The image's size expressed in 224 px units (e.g. 224 x 224 for any square image)."""
    scale = spatial_scale(images)
    return max(1, round(images.shape[-2] / scale)), max(1, round(images.shape[-1] / scale))


def level_params(table: Sequence[Sequence[float]], severity: float) -> tuple[float, ...]:
    """Parameters for a float severity, linearly interpolated between integer levels.

    Args:
        table: six rows, for levels 0 (the identity) to 5; each row a tuple of parameters.
        severity: in [0, 5].
    """
    low = min(math.floor(severity), len(table) - 2)
    fraction = severity - low
    return tuple(a + (b - a) * fraction for a, b in zip(table[low], table[low + 1], strict=True))


def blend_levels(
    level_fn: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor],
    images: torch.Tensor,
    severity: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """For corruptions whose parameters do not interpolate (counts, modes): blend the two neighbouring levels.

    Both levels use the same random draws (the generator state is replayed), so the blend moves smoothly.
    Level 0 is the clean image.
    """
    low, high = math.floor(severity), math.ceil(severity)
    if low == high:
        return level_fn(images, int(low), generator)
    state = generator.get_state()
    upper = level_fn(images, int(high), generator)
    if low == 0:
        lower = images
    else:
        after = generator.get_state()
        generator.set_state(state)
        lower = level_fn(images, int(low), generator)
        generator.set_state(after)
    return torch.lerp(lower, upper, severity - low)


def gray(images: torch.Tensor) -> torch.Tensor:
    """Luma (N x 1 x H x W) of RGB images."""
    r, g, b = images.unbind(1)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(1)


def gaussian_kernel1d(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """Normalised 1-d Gaussian taps, radius ``int(truncate * sigma + 0.5)`` (scikit-image's rule)."""
    radius = max(1, int(truncate * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


@functools.lru_cache(maxsize=64)
def _filter_matrix(length: int, taps: tuple[float, ...], mode: str, device: str) -> torch.Tensor:
    """Dense length x length matrix applying a centred 1-d filter with the edge mode folded in.

    Multiplying by a dense matrix is the fastest separable filter on CPU (one BLAS call per axis; oneDNN's
    single-channel convolutions are several times slower), and it is fast on GPU as well.
    """
    radius = len(taps) // 2
    positions = torch.arange(length).view(-1, 1) + torch.arange(-radius, radius + 1).view(1, -1)
    if mode == "reflect":  # reflect-101: ... 2 1 | 0 1 2 ... (repeat until inside, for wide kernels)
        period = max(2 * (length - 1), 1)
        positions = positions.remainder(period)
        positions = torch.where(positions >= length, period - positions, positions)
    else:  # replicate (scikit-image "nearest")
        positions = positions.clamp(0, length - 1)
    matrix = torch.zeros(length, length, dtype=torch.float64)
    weights = torch.tensor(taps, dtype=torch.float64).expand(length, -1)
    matrix.scatter_add_(1, positions, weights)
    return matrix.float().to(device)


def separable_filter(images: torch.Tensor, taps: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Filter every channel with the same 1-d taps along H and W (odd length, centred).

    Args:
        images: N x C x H x W float.
        taps: 1-d filter taps.
        mode: edge handling, ``replicate`` or ``reflect`` (reflect-101).
    """
    h, w = images.shape[-2:]
    key = tuple(float(t) for t in taps.detach().cpu().double())
    along_w = _filter_matrix(w, key, mode, str(images.device)).to(images.dtype)
    along_h = _filter_matrix(h, key, mode, str(images.device)).to(images.dtype)
    out = images @ along_w.T
    return along_h @ out


def gaussian_blur(images: torch.Tensor, sigma: float, truncate: float = 4.0,
                  mode: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of every channel (scikit-image ``gaussian``; its default edge mode is nearest).

    Args:
        images: N x C x H x W float.
        sigma: standard deviation in pixels; below 0.05 px the images come back unchanged.
        truncate: kernel radius in standard deviations.
        mode: padding, ``replicate`` (scikit-image ``nearest``) or ``reflect`` (reflect-101).
    """
    if sigma < 0.05:
        return images
    return separable_filter(images, gaussian_kernel1d(sigma, truncate, torch.device("cpu")), mode)


def box_blur3(images: torch.Tensor) -> torch.Tensor:
    """3 x 3 mean filter with reflect-101 edges (OpenCV ``blur(..., (3, 3))``)."""
    return separable_filter(images, torch.full((3,), 1.0 / 3.0), mode="reflect")


def _fast_fft_length(length: int) -> int:
    """Smallest integer >= length whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    candidate = length
    while True:
        rest = candidate
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return candidate
        candidate += 1


def fft_filter(images: torch.Tensor, kernels: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Correlate every channel with a 2-d kernel via FFT; cost does not grow with the kernel size.

    Args:
        images: N x C x H x W float.
        kernels: 1 x 1 x kh x kw (one kernel for all) or N x 1 x kh x kw (one per image); odd sizes, centre
            tap at (kh // 2, kw // 2). ``out[y, x] = sum K[dy, dx] * image[y + dy - kh//2, x + dx - kw//2]``.
        mode: padding outside the image, ``replicate`` or ``reflect`` (reflect-101, OpenCV's default).
    """
    h, w = images.shape[-2:]
    kh, kw = kernels.shape[-2:]
    ph, pw = kh // 2, kw // 2
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    padded = F.pad(images, (pw, pw, ph, ph), mode=mode)
    fh, fw = _fast_fft_length(padded.shape[-2]), _fast_fft_length(padded.shape[-1])
    # flip (correlation -> convolution) and roll the centre tap to index (0, 0)
    placed = torch.zeros(kernels.shape[0], 1, fh, fw, dtype=images.dtype, device=images.device)
    placed[..., :kh, :kw] = kernels.flip(-2, -1)
    placed = torch.roll(placed, shifts=(-ph, -pw), dims=(-2, -1))
    spectrum = torch.fft.rfft2(padded, s=(fh, fw)) * torch.fft.rfft2(placed)
    return torch.fft.irfft2(spectrum, s=(fh, fw))[..., ph:ph + h, pw:pw + w]


def motion_kernels(radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """One-sided motion-blur kernels (ImageNet-C's Wand-like ``_motion_blur``), one per angle.

    Tap ``i`` (0 <= i < 2 * radius + 1) has Gaussian weight ``exp(-i^2 / 2 sigma^2)`` and sits at offset
    ``(ceil(i sin a - 0.5), ceil(i cos a - 0.5))``; the last tap is weighted by the fractional part of the
    width so that the kernel changes continuously with ``radius``.

    Returns:
        N x 1 x k x k correlation kernels for ``fft_filter`` (k = 2 * ceil(2 * radius) + 1).
    """
    device = angles_deg.device
    width = 2.0 * radius + 1.0
    taps = torch.arange(math.ceil(width), device=device, dtype=torch.float32)
    weights = torch.exp(-0.5 * (taps / max(sigma, 1e-3)) ** 2) * (width - taps).clamp(0.0, 1.0)
    weights = weights / weights.sum()
    extent = int(taps[-1].item()) if taps.numel() else 0
    size = 2 * extent + 1
    angles = torch.deg2rad(angles_deg.float())
    rows = torch.ceil(taps[None, :] * torch.sin(angles)[:, None] - 0.5).long() + extent
    cols = torch.ceil(taps[None, :] * torch.cos(angles)[:, None] - 0.5).long() + extent
    kernels = torch.zeros(angles.shape[0], size * size, device=device)
    kernels.scatter_add_(1, rows * size + cols, weights.expand_as(rows).contiguous())
    return kernels.view(-1, 1, size, size)


def resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize N x C x H x W to ``size`` (antialiased when shrinking with bilinear)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if mode == "bilinear":
        shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return F.interpolate(images, size=size, mode=mode)


def uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator,
            device: torch.device) -> torch.Tensor:
    """Uniform float32 samples in [low, high) from the seeded generator."""
    return torch.rand(tuple(shape), generator=generator, device=device) * (high - low) + low


def normal(shape: Sequence[int], mean: float, std: float, generator: torch.Generator,
           device: torch.device) -> torch.Tensor:
    """Normal float32 samples from the seeded generator."""
    return torch.randn(tuple(shape), generator=generator, device=device) * std + mean


# Serialises ``single_torch_thread`` blocks: torch's thread count may be process-wide, and two overlapping
# save/restore pairs could otherwise leave the process on one thread for good.
_single_thread_lock = threading.Lock()


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block (for work made of many tiny ops), then restore it.

    Blocks in different threads (app sessions) run one at a time, so each restores what it saved.
    """
    with _single_thread_lock:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
