"""``bn-adapt``: recompute the BatchNorm running statistics on unlabeled drifted images.

Schneider et al. 2020 ("Improving robustness against common corruptions by covariate shift adaptation"):
the corruption moves the activations' mean and variance; normalising with the target's own statistics
undoes much of that. No gradients, one pass over the images: seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zeal_core.models.factory import ModelConfig
from zeal_core.retrain.base import ADAPT_SEED, AdaptContext, register_strategy
from zeal_core.retrain.batchnorm import adaptation_subset, recompute_bn_statistics, require_batchnorm
from zeal_core.retrain.online import OnlineAdapter


@dataclass(frozen=True)
class BnAdaptOptions:
    """Settings of ``bn-adapt``."""

    max_images: int = 4096  # adaptation images used at most (a seeded subset of the drifted train split)
    batch_size: int = 128  # images per forward pass; larger batches give steadier statistics
    source_weight: float = 0.0  # share of the parent's statistics kept, in [0, 1] (0: target stats only)


class BnAdaptOnline(OnlineAdapter):
    """Online form: every batch is normalised with its own statistics (blended with the source's by
    ``source_weight``); nothing is learned, so there is nothing to forget."""

    name = "bn-adapt"

    def __init__(self, model: nn.Module, model_config: ModelConfig, options: BnAdaptOptions,
                 device: torch.device) -> None:
        super().__init__(model, model_config, options, device)
        require_batchnorm(self.model, "bn-adapt")
        self.source_share = float(options.source_weight)


@register_strategy("bn-adapt", "recompute BatchNorm statistics on unlabeled drifted images (seconds)",
                   needs_labels=False, options=BnAdaptOptions, online=BnAdaptOnline)
def bn_adapt(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
             options: BnAdaptOptions) -> tuple[nn.Module, dict[str, Any]]:
    """Replace the running statistics by those of (a subset of) the adaptation images."""
    require_batchnorm(model, "bn-adapt")
    images = adaptation_subset(context.adapt_images, options.max_images, ADAPT_SEED)
    used = recompute_bn_statistics(model, model_config, images, context.device, options.batch_size,
                                   options.source_weight, context.progress, context.cancel)
    return model, {"adapt_images": used}
