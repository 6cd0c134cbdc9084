"""Building a timm model from a ``ModelConfig`` and turning uint8 images into its input."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet channel statistics, in [0, 1] units: timm's resnet18 default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network before loading its weights."""

    arch: str = "resnet18"  # timm model name
    num_classes: int = 10  # output classes, from the dataset
    image_size: int = 64  # px, square input side the model is trained and evaluated at
    pretrained: bool = False  # start from timm hub ImageNet weights (falls back to scratch offline)

    def to_dict(self) -> dict:
        """JSON-ready form, stored in every model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are ignored so older cards still load."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


def create_model(config: ModelConfig) -> nn.Module:
    """A fresh timm network for ``config`` (random weights; see ``zeal_core.train`` for pretrained)."""
    import timm

    return timm.create_model(config.arch, pretrained=False, num_classes=config.num_classes)


def prepare_batch(images: torch.Tensor, config: ModelConfig, device: torch.device | str,
                  channels_last: bool | None = None) -> torch.Tensor:
    """uint8 N x 3 x H x W (any device) -> normalised float input at the model's size on ``device``.

    Args:
        images: Batch of uint8 images (or float in [0, 255]).
        config: The model's config; its ``image_size`` sets the output size.
        device: Where the output lives.
        channels_last: Memory format; defaults to True on CUDA (faster convolutions), False on CPU.
    """
    device = torch.device(device)
    batch = images.to(device, non_blocking=True).float().div_(255.0)
    if batch.shape[-1] != config.image_size or batch.shape[-2] != config.image_size:
        batch = F.interpolate(batch, size=(config.image_size, config.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    if channels_last if channels_last is not None else device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def extract_features(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N x 512 for resnet18) and logits (N x classes) in one forward pass."""
    features = model.forward_head(model.forward_features(inputs), pre_logits=True)
    logits = model.get_classifier()(features)
    return features, logits
