"""What a saved version of an online adaptation holds: BatchNorm statistics that keep clean accuracy.

Online, an adapted ResNet normalises every batch with that batch's own statistics, so clean batches get
clean statistics and drifted batches drifted ones. A saved version is an ordinary eval-mode model: it has one
set of running statistics for every input. Those of the drifted images (bn-adapt, tent) fit the drift and
cost clean accuracy (digits, brightness 5: clean 98 -> 26 %); the source's fit clean data and miss the
drift. ``constrained_statistics`` takes the blend between the two,

    mean = s * mean_source + (1 - s) * mean_drifted,   var = s * var_source + (1 - s) * var_drifted,

with the smallest source share ``s`` (the most adaptation) whose accuracy on the clean labelled reference
stays within ``margin`` of the parent's; when no blend does, the parent's weights are kept. The choice is
made on the same reference the guard then checks, so it is a constraint the version is built to meet, not
an independent test of it (the guard's drifted check stays independent: it needs no labels).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from zeal_core.evaluate import evaluate
from zeal_core.models.factory import ModelConfig
from zeal_core.progress import CancelToken
from zeal_core.retrain.batchnorm import batchnorm_layers, recompute_bn_statistics

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # source shares tried, most adaptation first


def _statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in batchnorm_layers(model)]


def _set_blend(model: nn.Module, source: list[tuple[torch.Tensor, torch.Tensor]],
               target: list[tuple[torch.Tensor, torch.Tensor]], share: float) -> None:
    for layer, (source_mean, source_var), (target_mean, target_var) in zip(
            batchnorm_layers(model), source, target, strict=True):
        layer.running_mean.copy_(share * source_mean + (1 - share) * target_mean)
        layer.running_var.copy_(share * source_var + (1 - share) * target_var)


@torch.no_grad()
def constrained_statistics(adapted: nn.Module, parent: nn.Module, model_config: ModelConfig,
                           images: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor],
                           device: torch.device, margin: float, batch_size: int = 128,
                           cancel: CancelToken | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The adapted model with the most-adapted statistics that keep clean accuracy (module docstring).

    Args:
        adapted: The adapted model, still holding the source's running statistics (changed in place).
        parent: The parent, for its clean accuracy on ``reference`` (not changed).
        model_config: Their config.
        images: The drifted adaptation images (uint8), whose statistics are blended in.
        reference: Clean labelled (images, labels).
        device: Where to compute.
        margin: Share of clean accuracy the version may lose, at most.
        batch_size: Images per forward pass.
        cancel: Checked between passes.

    Returns:
        (the model to save, details: the source share chosen or None when the parent was kept, and the
        clean accuracies tried).
    """
    reference_images, reference_labels = reference
    floor = evaluate(parent, model_config, reference_images, reference_labels, device, cancel=cancel).accuracy
    floor -= margin
    if not batchnorm_layers(adapted):  # LayerNorm / GroupNorm only: nothing to blend, check as it is
        clean = evaluate(adapted, model_config, reference_images, reference_labels, device, cancel=cancel)
        if clean.accuracy >= floor:
            return adapted, {"source_share": None, "clean_tried": {"adapted": clean.accuracy}}
        return copy.deepcopy(parent), {"source_share": None, "kept_parent": True,
                                       "clean_tried": {"adapted": clean.accuracy}}
    source = _statistics(adapted)
    recompute_bn_statistics(adapted, model_config, images, device, batch_size, 0.0, None, cancel)
    target = _statistics(adapted)
    tried: dict[str, float] = {}
    for share in SHARES:
        _set_blend(adapted, source, target, share)
        accuracy = evaluate(adapted, model_config, reference_images, reference_labels, device,
                            cancel=cancel).accuracy
        tried[f"{share:g}"] = accuracy
        if accuracy >= floor:
            return adapted.eval(), {"source_share": share, "kept_parent": False, "clean_tried": tried}
    return copy.deepcopy(parent).eval(), {"source_share": None, "kept_parent": True, "clean_tried": tried}
