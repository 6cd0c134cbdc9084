"""What every retraining strategy shares: the registry, the context a strategy gets, and the seeds.

A strategy is ``function(model, model_config, context, options) -> (model, info)`` registered under a name
with ``@register_strategy(name, description, needs_labels=..., options=OptionsDataclass)``, like timm's
``register_model``; each lives in a module of its own in this package. ``zeal_core.retrain.adapt`` is the
one entry point that scores, runs and saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zeal_core.config import build
from zeal_core.models.factory import ModelConfig
from zeal_core.plugins import Registry
from zeal_core.policy import MAX_CLEAN_DROP  # noqa: F401 - part of the retrain API (guard, strategies, pages)
from zeal_core.progress import CancelToken, ProgressCallback

EVAL_SEED = 0  # seed of the drift applied to the validation images for every before/after score
ADAPT_SEED = 1  # seed of the drift applied to the adaptation (train split) images: other noise, other images


@dataclass
class AdaptContext:
    """What a strategy gets besides the model: data, drift, device, and the parent's scores."""

    dataset: Any  # the ImageDataset
    drift: Any  # the DriftSpec adapted to; None when adapting to real, unlabeled batches
    device: torch.device  # where to compute
    parent_card: Any  # the parent's ModelCard
    parent_clean_accuracy: float  # share, clean val, for the guard
    adapt_images: torch.Tensor | None  # unlabeled drifted images (uint8) for the unlabeled strategies
    progress: ProgressCallback | None  # receives the strategy's events
    cancel: CancelToken | None  # checked between steps
    # clean labelled (images, labels) a strategy may check itself against (a seeded part of the val split);
    # None when there is none
    reference: tuple[torch.Tensor, torch.Tensor] | None = None


StrategyFunction = Callable[[nn.Module, ModelConfig, AdaptContext, Any], tuple[nn.Module, dict[str, Any]]]


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy."""

    name: str  # registry name, e.g. "bn-adapt"
    description: str  # one line
    needs_labels: bool  # True when it trains on labelled images
    options: type  # the options dataclass
    run: StrategyFunction  # (model, model_config, context, options) -> (model, info)
    online: type | None = None  # its OnlineAdapter class (continual use), None for labelled strategies


_STRATEGIES: Registry[StrategyInfo] = Registry("strategy")


def register_strategy(name: str, description: str, *, needs_labels: bool, options: type,
                      online: type | None = None) -> Callable[[StrategyFunction], StrategyFunction]:
    """Decorator: add ``function(model, model_config, context, options) -> (model, info)`` as ``name``.

    ``online`` is the strategy's ``OnlineAdapter`` subclass (``zeal_core.retrain.online``): what continual
    adaptation (the monitor, the adaptation benchmark) runs batch by batch.
    """

    def decorate(function: StrategyFunction) -> StrategyFunction:
        _STRATEGIES.add(name, StrategyInfo(name, description, needs_labels, options, function, online))
        return function

    return decorate


def list_strategies() -> list[str]:
    """Names of the registered strategies, cheapest first."""
    return _STRATEGIES.names()


def strategy_info(name: str) -> StrategyInfo:
    """The registered strategy ``name``.

    Raises:
        ConfigError: No such strategy.
    """
    return _STRATEGIES.get(name)


def unlabeled_strategies() -> list[str]:
    """Names of the strategies that adapt on unlabeled images (what real production batches allow)."""
    return [name for name in _STRATEGIES if not _STRATEGIES.get(name).needs_labels]


def continual_strategies() -> list[str]:
    """Names of the strategies that can adapt online, batch by batch (they have an ``online`` form)."""
    return [name for name in _STRATEGIES if _STRATEGIES.get(name).online is not None]


def parse_options(name: str, options: dict[str, Any] | None) -> Any:
    """The strategy's options dataclass with ``options`` applied (unknown keys raise ``ConfigError``)."""
    return build(strategy_info(name).options, options, f"strategy {name!r}")
