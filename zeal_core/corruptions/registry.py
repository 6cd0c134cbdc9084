"""The corruption registry (``register_corruption``, like timm's ``register_model``) and ``apply``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from zeal_core.corruptions._ops import CorruptionFn
from zeal_core.errors import ConfigError
from zeal_core.plugins import Registry

MAX_SEVERITY = 5.0  # ImageNet-C's strongest level
# images per chunk: on CPU a few images keep every intermediate in cache (2-4x faster than whole batches);
# on GPU large chunks fill the device and only bound the memory of the intermediates
CPU_CHUNK = 8
GPU_CHUNK = 1024
_CHUNK_SEED_STRIDE = 1_000_003  # chunk k of a batch draws from seed * stride + k

# ImageNet-C's order: the 15 common corruptions (noise, blur, weather, digital), then the 4 extra ones
IMAGENET_C_ORDER = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
IMAGENET_C_GROUP = "imagenet-c"
# Groups of pixel drift kinds, in the order pages list them (ImageNet-C first); a kind may register another
# group, which is listed after these, in registration order.
DRIFT_KIND_GROUPS = (IMAGENET_C_GROUP, "geometric", "capture")


@dataclass(frozen=True)
class CorruptionInfo:
    """What the registry knows about one corruption."""

    name: str  # registry key, e.g. "gaussian_noise"
    family: str  # "noise", "blur", "weather" or "digital" (ImageNet-C's grouping)
    description: str  # one line for menus and tooltips
    random: bool  # True when the output depends on the seed
    group: str = IMAGENET_C_GROUP  # "imagenet-c", "geometric" or "capture" (how pages group the kinds)


@dataclass(frozen=True)
class _Entry:
    info: CorruptionInfo  # metadata shown to users
    function: CorruptionFn  # (float images in [0, 1], severity in (0, 5], generator) -> float images
    uint8_cpu: Uint8Fn | None = None  # optional faster path for uint8 batches on the CPU (e.g. via PIL)


_REGISTRY: Registry[_Entry] = Registry("corruption")
# (uint8 N x 3 x H x W CPU images, severity in (0, 5]) -> uint8 images
Uint8Fn = Callable[[torch.Tensor, float], torch.Tensor]


def register_corruption(
    family: str, description: str, random: bool = True, uint8_cpu: Uint8Fn | None = None,
    group: str = IMAGENET_C_GROUP,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator: add a corruption (a pixel drift kind) under its function name.

    The function receives float32 images in [0, 1] (N x 3 x H x W, on any device), a severity in (0, 5] and a
    seeded ``torch.Generator`` on the images' device; it returns images of the same shape (values outside
    [0, 1] are clipped by ``apply``). ``uint8_cpu`` optionally handles uint8 CPU batches directly, for
    deterministic corruptions that a C library does faster than torch (JPEG and pixelate via PIL); it must
    compute the same corruption. ``group`` places the kind in the pages' menus and in
    ``list_drift_kinds``; only ``"imagenet-c"`` kinds are in ``list_corruptions``.
    """
    if not group:
        raise ConfigError("a drift kind needs a group, e.g. 'geometric' or 'capture'")

    def decorator(function: CorruptionFn) -> CorruptionFn:
        name = function.__name__
        info = CorruptionInfo(name, family, description, random, group)
        _REGISTRY.add(name, _Entry(info, function, uint8_cpu))
        return function

    return decorator


def list_corruptions() -> list[str]:
    """The ImageNet-C corruptions, in ImageNet-C's order (15 common, then the 4 extra).

    The robustness table and the comparison with the ``imagecorruptions`` reference rely on exactly these;
    ``list_drift_kinds()`` adds the geometric and capture kinds.
    """
    rank = {name: index for index, name in enumerate(IMAGENET_C_ORDER)}
    names = [name for name in _REGISTRY if _REGISTRY.get(name).info.group == IMAGENET_C_GROUP]
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def drift_kind_groups() -> dict[str, list[str]]:
    """Pixel drift kinds by group, for menus: ``{"imagenet-c": [...19...], "geometric": [...], ...}``.

    Groups come in ``DRIFT_KIND_GROUPS`` order (others after, in registration order); ImageNet-C's kinds in
    its order, the others in registration order.
    """
    groups: dict[str, list[str]] = {IMAGENET_C_GROUP: list_corruptions()}
    for group in DRIFT_KIND_GROUPS[1:]:
        groups[group] = []
    for name in _REGISTRY:
        group = _REGISTRY.get(name).info.group
        if group != IMAGENET_C_GROUP:
            groups.setdefault(group, []).append(name)
    return {group: names for group, names in groups.items() if names}


def list_drift_kinds(group: str | None = None) -> list[str]:
    """Every pixel drift kind (ImageNet-C first, then geometric, then capture), or those of one group.

    Raises:
        ConfigError: ``group`` is not a registered group (the message lists them).
    """
    groups = drift_kind_groups()
    if group is None:
        return [name for names in groups.values() for name in names]
    if group not in groups:
        raise ConfigError(f"unknown drift kind group {group!r}: choose one of {', '.join(groups)}")
    return list(groups[group])


def corruption_info(name: str) -> CorruptionInfo:
    """Metadata of one corruption.

    Raises:
        ConfigError: the name is not registered.
    """
    return _REGISTRY.get(name).info


def check_severity(severity: float, name: str = "") -> float:
    """The severity as a float, or a ConfigError when it is not a number in [0, 5]."""
    where = f" for {name}" if name else ""
    try:
        value = float(severity)
    except (TypeError, ValueError):
        raise ConfigError(f"severity{where} must be a number in [0, 5], got {severity!r}") from None
    if math.isnan(value) or not 0.0 <= value <= MAX_SEVERITY:
        raise ConfigError(f"severity{where} must be in [0, 5] (0 = clean, 1-5 = the kind's levels), "
                          f"got {severity!r}")
    return value


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"corruptions need an N x 3 x H x W tensor, got {shape}: "
                          "convert grayscale to RGB first")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ConfigError(f"corruptions need uint8 or float images, got {images.dtype}")


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (the same seed gives the same draws on that device)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def apply(images: torch.Tensor, name: str, severity: float, seed: int = 0) -> torch.Tensor:
    """Corrupt a whole batch.

    Args:
        images: N x 3 x H x W, uint8 in [0, 255] or float in [0, 1], on any device.
        name: a registered corruption (``list_corruptions()``).
        severity: 0 (clean) to 5; integers are ImageNet-C's levels, values in between interpolate.
        seed: seeds the random draws; the same seed, batch and device give the same output.

    Returns:
        Corrupted images with the input's shape, dtype and device (uint8 rounded; float clipped to [0, 1]).

    Raises:
        ConfigError: unknown name, severity outside [0, 5] or NaN, or a tensor that is not N x 3 x H x W.
    """
    entry = _REGISTRY.get(name)
    level = check_severity(severity, name)
    _check_images(images)
    if level == 0.0 or images.shape[0] == 0:
        return images.clone()
    if entry.uint8_cpu is not None and images.dtype == torch.uint8 and images.device.type == "cpu":
        return entry.uint8_cpu(images, level)
    out = torch.empty_like(images)
    chunk = CPU_CHUNK if images.device.type == "cpu" else GPU_CHUNK
    starts = range(0, images.shape[0], chunk)

    def corrupt_chunk(index: int, start: int) -> None:
        # each chunk has its own generator (seed, chunk index), so chunks are independent of one another
        generator = make_generator(images.device, int(seed) * _CHUNK_SEED_STRIDE + index)
        part = images[start:start + chunk]
        work = part.float().div_(255.0) if part.dtype == torch.uint8 else part.float()
        result = entry.function(work, level, generator).clamp_(0.0, 1.0)
        out[start:start + chunk] = result.mul_(255.0).round_() if images.dtype == torch.uint8 else result

    for index, start in enumerate(starts):
        corrupt_chunk(index, start)
    return out
