"""``finetune``: a few low-learning-rate epochs from the parent on clean + corrupted labelled images.

Each epoch is scored on clean validation images and on validation images under the drift's corruptions at
severities 1..max (another seed than the drifted images ``adapt`` reports on, which are never used to
choose); the best epoch that keeps clean accuracy within ``max_clean_drop`` of the parent's is kept, and
when none does, the parent's weights are returned unchanged.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from zeal_core.errors import ConfigError
from zeal_core.evaluate import evaluate
from zeal_core.models.factory import ModelConfig
from zeal_core.progress import check_cancel
from zeal_core.retrain.base import ADAPT_SEED, MAX_CLEAN_DROP, AdaptContext, register_strategy
from zeal_core.retrain.labelled import epoch_progress, selection_images, train_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneOptions:
    """Settings of ``finetune`` (labelled; starts from the parent's weights)."""

    epochs: int = 3  # training epochs; a checkpoint is scored after each
    lr_scale: float = 0.1  # learning rate = the dataset recipe's lr x this
    max_severity: float = 5.0  # training corruptions get a random severity in [max/4, max] per batch
    corruption_share: float = 0.5  # share of each training batch corrupted; the rest stays clean
    max_clean_drop: float = MAX_CLEAN_DROP  # share; larger clean losses are never accepted


def _checkpoint_scores(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
                       selection: torch.Tensor) -> tuple[float, float]:
    """(clean val accuracy, accuracy on the corrupted selection images) of a checkpoint."""
    val_images, val_labels = context.dataset.split("val")
    clean = evaluate(model, model_config, val_images, val_labels, context.device, cancel=context.cancel)
    robust = evaluate(model, model_config, selection, val_labels, context.device,
                      cancel=context.cancel)
    return clean.accuracy, robust.accuracy


@register_strategy("finetune", "train the parent a few epochs on clean + corrupted labelled data, guarded by "
                               "clean validation", needs_labels=True, options=FinetuneOptions)
def finetune(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
             options: FinetuneOptions) -> tuple[nn.Module, dict[str, Any]]:
    """One epoch at a time from the parent; keep the best epoch that passes the clean guard.

    An epoch's score is the mean of its clean val accuracy and its accuracy on the val images under the
    drift's corruptions at severities 1..max (another seed); the drifted images ``adapt`` reports on are
    never used to choose. An epoch whose clean val accuracy is more than ``max_clean_drop`` below the
    parent's is never accepted; when none passes, the parent's weights are kept unchanged.
    """
    from zeal_core.train import train_model  # imported here: zeal_core.train imports the data layer

    if options.epochs < 1:
        raise ConfigError(f"finetune epochs must be at least 1, got {options.epochs}")
    config = train_config(context, model_config, 1, options.lr_scale, options.max_severity,
                          options.corruption_share)
    val_images, _ = context.dataset.split("val")
    selection = selection_images(val_images, context.drift, options.max_severity, ADAPT_SEED + 1)
    floor = context.parent_clean_accuracy - options.max_clean_drop
    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    history = []
    current = model
    for epoch in range(options.epochs):
        check_cancel(context.cancel)
        # One short one-cycle per epoch: each call warms up and anneals at the low rate, so every epoch
        # ends at a settled checkpoint worth scoring.
        result = train_model(context.dataset, replace(config, seed=config.seed + epoch),
                             device=context.device, init_model=current, model_config=model_config,
                             progress=epoch_progress(context.progress, epoch, options.epochs),
                             cancel=context.cancel)
        current = result.model
        clean, robust = _checkpoint_scores(current, model_config, context, selection)
        passed = clean >= floor
        history.append({"epoch": epoch + 1, "clean_val": clean, "corrupted_val_selection": robust,
                        "passes_guard": passed})
        log.info("finetune epoch %d: clean %.4f, corrupted selection %.4f, guard %s", epoch + 1, clean,
                 robust, "ok" if passed else "rejected")
        score = (clean + robust) / 2
        if passed and (best is None or score > best[0]):
            best = (score, copy.deepcopy(current.state_dict()), epoch + 1)
    info: dict[str, Any] = {"epochs": history, "corruption_augment": config.corruption_augment,
                            "clean_floor": floor}
    if best is None:
        info.update(guard_passed=False, guard_rejected_all=True, chosen_epoch=None)
        return model, info  # train_model copies its init model, so these are the parent's weights
    current.load_state_dict(best[1])
    info.update(guard_passed=True, guard_rejected_all=False, chosen_epoch=best[2])
    return current, info
