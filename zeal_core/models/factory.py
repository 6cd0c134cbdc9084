"""Building a timm model from a ``ModelConfig`` and turning uint8 images into its input."""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.errors import ConfigError

# ImageNet channel statistics, in [0, 1] units: timm's resnet18 default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

log = logging.getLogger(__name__)


# Most output classes a model card may ask for (ImageNet-21k has about 21,800).
MAX_CLASSES = 100_000
# Bounds of a channel's normalisation, in [0, 1] pixel units: a mean is a pixel value; a std outside
# [0.001, 10] is a typo (0.5 and ImageNet's ~0.23 are the usual values).
STD_RANGE = (1e-3, 10.0)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network before loading its weights."""

    arch: str = "resnet18"  # timm model name
    num_classes: int = 10  # output classes, from the dataset
    image_size: int = 64  # px, square input side the model is trained and evaluated at
    pretrained: bool = False  # start from timm hub ImageNet weights (falls back to scratch offline)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel (RGB) input mean, [0, 1] pixel units
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel (RGB) input std, [0, 1] pixel units

    def __post_init__(self) -> None:
        # Lists (from JSON or flags) become tuples; bad values are refused wherever a config is made.
        for name, low, high in (("mean", 0.0, 1.0), ("std", *STD_RANGE)):
            object.__setattr__(self, name, _channel_triple(getattr(self, name), name, low, high))

    def to_dict(self) -> dict:
        """JSON-ready form, stored in every model card."""
        values = asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are ignored so older cards still load."""
        if not isinstance(values, dict):
            raise TypeError(f"model_config must be a JSON object, not {type(values).__name__}")
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        config = cls(**known)
        # A card may come from elsewhere: bound what it asks to build (a huge head is a memory bomb).
        if not isinstance(config.arch, str) or not config.arch:
            raise ValueError(f"model_config.arch must be a timm model name, not {config.arch!r}")
        for name, low, high in (("num_classes", 1, MAX_CLASSES), ("image_size", 8, 1024)):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"model_config.{name} must be an integer in [{low}, {high}], not {value!r}")
        if not isinstance(config.pretrained, bool):
            raise ValueError(f"model_config.pretrained must be true or false, not {config.pretrained!r}")
        return config


def _channel_triple(value: object, name: str, low: float, high: float) -> tuple[float, float, float]:
    """Three finite numbers in ``[low, high]`` (one per RGB channel) as a tuple of floats.

    Raises:
        ConfigError: Not three numbers, or one is out of range (ConfigError is a ValueError, so a damaged
            card's message comes out of ``ModelCard.from_dict`` as for the other fields).
    """
    items = list(value) if isinstance(value, (list, tuple)) else []
    if len(items) != 3 or not all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                  and math.isfinite(x) and low <= x <= high for x in items):
        raise ConfigError(f"model_config.{name} must be three numbers (R, G, B) in [{low:g}, {high:g}], in "
                          f"[0, 1] pixel units (ImageNet's are {IMAGENET_MEAN} and {IMAGENET_STD}), not "
                          f"{value!r}")
    return (float(items[0]), float(items[1]), float(items[2]))


def unknown_arch_message(arch: str) -> str:
    """The error text for a name timm does not know, with the nearest timm names."""
    import timm

    names = timm.list_models()
    near = difflib.get_close_matches(arch.lower(), names, n=6, cutoff=0.6)
    near += [name for name in timm.list_models(f"*{arch.lower()}*")[:6] if name not in near] if arch else []
    hint = f"; near matches: {', '.join(near[:8])}" if near else ""
    return (f"unknown model architecture {arch!r}: use a timm model name such as 'resnet18' (see "
            f"timm.list_models(), {len(names)} names){hint}")


def create_model(config: ModelConfig) -> nn.Module:
    """A fresh timm network for ``config``.

    With ``config.pretrained`` the timm hub ImageNet weights are tried first; where the hub cannot be reached
    (offline, ``HF_HUB_OFFLINE=1``, no cached copy) a warning is logged and the network starts from random
    weights. Use ``build_model`` to get that warning back as a value (training shows it to the user).

    Raises:
        ModelError: ``config.arch`` is not a timm model name.
    """
    return build_model(config)[0]


def build_model(config: ModelConfig) -> tuple[nn.Module, str | None]:
    """Like ``create_model``, but also returns the pretrained fallback warning (None when there is none).

    Raises:
        ModelError: ``config.arch`` is not a timm model name.
    """
    import timm

    from zeal_core.errors import ModelError

    if not timm.is_model(config.arch):
        raise ModelError(unknown_arch_message(config.arch))
    if config.pretrained:
        try:
            return timm.create_model(config.arch, pretrained=True, num_classes=config.num_classes), None
        except Exception as error:  # hub unreachable, offline mode, missing cache: all mean "no weights"
            warning = pretrained_fallback_message(config.arch, error)
            log.warning(warning)
            return timm.create_model(config.arch, pretrained=False, num_classes=config.num_classes), warning
    return timm.create_model(config.arch, pretrained=False, num_classes=config.num_classes), None


def pretrained_fallback_message(arch: str, error: BaseException) -> str:
    """The user-facing line shown when pretrained weights could not be fetched."""
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return (f"pretrained weights for {arch} could not be loaded from the timm hub{offline}: {reason}; "
            "training from scratch instead (to use them, connect to the internet or put them in the "
            "Hugging Face cache, then train again)")


def prepare_batch(images: torch.Tensor, config: ModelConfig, device: torch.device | str,
                  channels_last: bool | None = None) -> torch.Tensor:
    """uint8 N x 3 x H x W (any device) -> normalised float input at the model's size on ``device``.

    Args:
        images: Batch of uint8 images (or float in [0, 255]).
        config: The model's config; its ``image_size`` sets the output size, its ``mean``/``std`` the
            normalisation.
        device: Where the output lives.
        channels_last: Memory format; defaults to True on CUDA (faster convolutions), False on CPU.
    """
    device = torch.device(device)
    batch = images.to(device, non_blocking=True).float().div_(255.0)
    if batch.shape[-1] != config.image_size or batch.shape[-2] != config.image_size:
        batch = F.interpolate(batch, size=(config.image_size, config.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    if channels_last if channels_last is not None else device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def extract_features(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N x 512 for resnet18) and logits (N x classes) in one forward pass."""
    features = model.forward_head(model.forward_features(inputs), pre_logits=True)
    logits = model.get_classifier()(features)
    return features, logits
