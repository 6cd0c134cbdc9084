"""Normalisation layers of any kind, and BatchNorm that normalises with the batch in front of it.

Label-free adaptation changes little of a network: the scale and shift of its normalisation layers (tent,
EATA, SAR, ROID). A ResNet has BatchNorm; a ConvNeXt has LayerNorm (timm's ``LayerNorm2d``); a ViT has
LayerNorm; some ResNets and detectors have GroupNorm. ``norm_layers`` finds all of them, so a strategy built
on it works for every architecture timm offers.

BatchNorm is the one kind that also keeps statistics. At test time the online strategies normalise each
batch with a blend of its own statistics and the source's (``batch_statistics``)::

    mu  = (1 - s) * mu_batch + s * mu_source
    var = (1 - s) * var_batch + s * var_source + s * (1 - s) * (mu_batch - mu_source) ** 2

``s`` is the share of the source (0: pure batch statistics as in tent; 1: the source's running statistics).
The variance is that of the two-component mixture, so the blend is a proper distribution's. Gradients flow
through the batch statistics as in training mode; the running statistics are never changed, so switching
the mode off gives the source model back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.errors import ModelError

_BATCHNORM = nn.modules.batchnorm._BatchNorm
NORM_KINDS = (_BATCHNORM, nn.LayerNorm, nn.GroupNorm)  # timm's LayerNorm2d, GroupNorm1 subclass these


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (BatchNorm, LayerNorm, GroupNorm, timm's RmsNorm)."""
    return isinstance(module, NORM_KINDS) or type(module).__name__ in ("RmsNorm", "RmsNorm2d")


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every normalisation layer of ``model`` with a learnable scale, in module order."""
    return [module for module in model.modules()
            if is_norm_layer(module) and isinstance(getattr(module, "weight", None), nn.Parameter)]


def norm_kinds(model: nn.Module) -> list[str]:
    """Class names of the model's normalisation layers (e.g. ``["BatchNorm2d"]``), for a card."""
    return sorted({type(layer).__name__ for layer in norm_layers(model)})


def require_norm_layers(model: nn.Module, strategy: str) -> list[nn.Module]:
    """``norm_layers(model)``, or a ``ModelError`` naming the strategy when there are none."""
    layers = norm_layers(model)
    if not layers:
        raise ModelError(f"strategy {strategy!r} adapts normalisation layers (BatchNorm, LayerNorm, "
                         "GroupNorm), and this model has none: use finetune or retrain")
    return layers


def train_only_norm_affine(model: nn.Module, layers: list[nn.Module]) -> list[nn.Parameter]:
    """Freeze every parameter but the scale and shift of ``layers``; returns those (in order)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    affine = [parameter for layer in layers for parameter in (layer.weight, getattr(layer, "bias", None))
              if isinstance(parameter, nn.Parameter)]
    for parameter in affine:
        parameter.requires_grad_(True)
    return affine


def _blended_forward(layer: nn.modules.batchnorm._BatchNorm, source_share: float, inputs: torch.Tensor
                     ) -> torch.Tensor:
    """BatchNorm with the blend of batch and source statistics (module docstring)."""
    dims = [0, *range(2, inputs.dim())]
    if layer.running_mean is None:  # a layer that keeps no statistics: only the batch's exist
        source_share = 0.0
    elif source_share >= 1.0 or inputs.numel() // inputs.shape[1] < 2:  # one value per channel: no variance
        return F.batch_norm(inputs, layer.running_mean, layer.running_var, layer.weight, layer.bias, False,
                            0.0, layer.eps)
    mean = inputs.mean(dim=dims)
    var = inputs.var(dim=dims, unbiased=False)
    if source_share > 0.0:
        source_mean, source_var = layer.running_mean.to(mean), layer.running_var.to(var)
        gap = mean - source_mean
        mean = (1 - source_share) * mean + source_share * source_mean
        var = ((1 - source_share) * var + source_share * source_var
               + source_share * (1 - source_share) * gap ** 2)
    shape = [1, -1] + [1] * (inputs.dim() - 2)
    normed = (inputs - mean.view(shape)) * torch.rsqrt(var.view(shape) + layer.eps)
    if layer.weight is not None:
        normed = normed * layer.weight.view(shape) + layer.bias.view(shape)
    return normed


@contextlib.contextmanager
def batch_statistics(model: nn.Module, source_share: float = 0.0) -> Iterator[int]:
    """Within the block, every BatchNorm layer of ``model`` normalises with its batch (blended, see above).

    The running statistics stay untouched; the other layers keep their mode (call ``model.eval()`` first so
    that dropout is off). Yields the number of BatchNorm layers switched.
    """
    if not 0.0 <= source_share <= 1.0:
        raise ValueError(f"source_share must be in [0, 1], got {source_share}")
    layers = [module for module in model.modules() if isinstance(module, _BATCHNORM)]
    for layer in layers:
        # An instance attribute shadows the class's forward; deleting it restores the original.
        layer.forward = lambda inputs, layer=layer: _blended_forward(layer, source_share, inputs)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
