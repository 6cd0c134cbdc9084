"""``retrain``: the dataset's recipe from random weights, with the drift's corruptions as augmentation.

The slowest strategy and the only one that does not start from the parent; the clean-accuracy guard is
reported (there is no parent's weights to fall back to).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from zeal_core.evaluate import evaluate
from zeal_core.models.factory import ModelConfig
from zeal_core.retrain.base import MAX_CLEAN_DROP, AdaptContext, register_strategy
from zeal_core.retrain.labelled import train_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOptions:
    """Settings of ``retrain`` (labelled; from scratch)."""

    epochs: int | None = None  # training epochs; None: the dataset recipe's
    max_severity: float = 5.0  # training corruptions get a random severity in [max/4, max] per batch
    corruption_share: float = 0.5  # share of each training batch corrupted; the rest stays clean
    max_clean_drop: float = MAX_CLEAN_DROP  # share; a larger clean loss is only reported (no parent to keep)


@register_strategy("retrain", "train from scratch with corruption augmentation (labelled, slowest)",
                   needs_labels=True, options=RetrainOptions)
def retrain_from_scratch(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
                         options: RetrainOptions) -> tuple[nn.Module, dict[str, Any]]:
    """The dataset recipe from random weights, with corruption augmentation; the clean guard is reported."""
    from zeal_core.train import default_config, train_model

    epochs = options.epochs or default_config(context.dataset.name, gpu=context.device.type == "cuda").epochs
    config = train_config(context, model_config, epochs, 1.0, options.max_severity, options.corruption_share)
    fresh_config = replace(model_config, pretrained=False)
    result = train_model(context.dataset, config, device=context.device, model_config=fresh_config,
                         progress=context.progress, cancel=context.cancel)
    val_images, val_labels = context.dataset.split("val")
    clean = evaluate(result.model, model_config, val_images, val_labels, context.device).accuracy
    passed = clean >= context.parent_clean_accuracy - options.max_clean_drop
    if not passed:
        log.warning("retrain: clean val accuracy %.4f is more than %.1f points below the parent's %.4f",
                    clean, options.max_clean_drop * 100, context.parent_clean_accuracy)
    return result.model, {"epochs": epochs, "corruption_augment": config.corruption_augment,
                          "guard_passed": passed, "history": result.history}
