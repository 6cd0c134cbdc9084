"""BatchNorm helpers shared by the unlabeled strategies: find the layers, re-estimate their statistics."""

from __future__ import annotations

import torch
from torch import nn

from zeal_core.errors import ConfigError, ModelError
from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report
from zeal_core.sampling import seeded_subset


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``, in module order."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def require_batchnorm(model: nn.Module, strategy: str) -> list[nn.modules.batchnorm._BatchNorm]:
    """``batchnorm_layers(model)``, or a ``ModelError`` that names the strategies that work without them."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ModelError(f"strategy {strategy!r} needs BatchNorm layers, and this model has none: use roid "
                         "(it adapts LayerNorm and GroupNorm too), finetune or retrain")
    return layers


def _batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [images[start:start + batch_size] for start in range(0, images.shape[0], batch_size)]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
                            device: torch.device, batch_size: int = 128, source_weight: float = 0.0,
                            progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None) -> int:
    """Replace every BatchNorm layer's running mean and variance by those of ``images`` (in place).

    The running statistics are reset and accumulated as an exact cumulative average (``momentum=None``)
    over forward passes in train mode without gradients; afterwards the layers' momentum is restored and the
    model is left in eval mode.

    Args:
        model: The network (changed in place).
        model_config: Its config (input size).
        images: uint8 unlabeled images of the target domain.
        device: Where to run.
        batch_size: Images per forward pass (a last batch of 1 image is skipped: no variance).
        source_weight: Share of the old statistics kept: new = w * old + (1 - w) * target.
        progress: Receives ``bn-adapt`` events per batch.
        cancel: Checked between batches.

    Returns:
        How many images were used.
    """
    if not 0.0 <= source_weight <= 1.0:
        raise ConfigError(f"source_weight must be in [0, 1], got {source_weight}")
    layers = batchnorm_layers(model)
    saved = [(layer.momentum, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch weighs the same
    model.to(device).train()
    used = 0
    batches = _batches(images, batch_size)
    try:
        for index, batch in enumerate(batches):
            check_cancel(cancel)
            if batch.shape[0] < 2:
                continue
            model(prepare_batch(batch, model_config, device))
            used += batch.shape[0]
            report(progress, "bn-adapt", index + 1, len(batches), f"BatchNorm statistics: {used} images")
    finally:
        for layer, (momentum, old_mean, old_var) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if used == 0:
                layer.running_mean.copy_(old_mean)
                layer.running_var.copy_(old_var)
            elif source_weight > 0:
                keep = source_weight
                layer.running_mean.mul_(1 - keep).add_(old_mean.to(layer.running_mean), alpha=keep)
                layer.running_var.mul_(1 - keep).add_(old_var.to(layer.running_var), alpha=keep)
        model.eval()
    return used


def adaptation_subset(images: torch.Tensor, max_images: int, seed: int) -> torch.Tensor:
    """At most ``max_images`` of ``images``: a seeded random subset, in their original order."""
    return images[seeded_subset(images.shape[0], max_images, seed)]
