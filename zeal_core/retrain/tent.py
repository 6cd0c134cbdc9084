"""``tent``: test-time entropy minimisation on the BatchNorm scale and shift (Wang et al., ICLR 2021).

Tent normalises every batch with its own statistics and takes gradient steps on the prediction entropy,
updating only the BatchNorm affine parameters. Here it starts from the target's statistics (bn-adapt),
trains the affine part, and re-estimates the running statistics at the end so that the saved model behaves
like tent's batch-statistics model in ordinary eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.progress import check_cancel, report
from zeal_core.retrain.base import ADAPT_SEED, AdaptContext, register_strategy
from zeal_core.retrain.batchnorm import adaptation_subset, recompute_bn_statistics, require_batchnorm
from zeal_core.retrain.online import OnlineAdapter


@dataclass(frozen=True)
class TentOptions:
    """Settings of ``tent``."""

    max_images: int = 4096  # adaptation images used at most
    batch_size: int = 128  # images per step; tent normalises with each batch's statistics
    epochs: int = 1  # passes over the adaptation images
    lr: float = 1e-3  # Adam learning rate for the BatchNorm scale and shift


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits`` (N x C)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


def _affine_only(model: nn.Module, layers: list[nn.Module]) -> list[nn.Parameter]:
    """Freeze everything but the BatchNorm scale and shift; returns those parameters."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    affine = [parameter for layer in layers for parameter in (layer.weight, layer.bias)
              if parameter is not None]
    for parameter in affine:
        parameter.requires_grad_(True)
    return affine


def _entropy_steps(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
                   context: AdaptContext, options: TentOptions, affine: list[nn.Parameter]) -> list[float]:
    """Adam steps on the batch entropy over ``options.epochs`` passes; returns each step's entropy."""
    optimizer = torch.optim.Adam(affine, lr=options.lr)
    generator = torch.Generator().manual_seed(ADAPT_SEED)
    model.train()  # batch statistics in every forward pass, as tent prescribes
    batch_size = max(2, min(options.batch_size, images.shape[0]))  # few images (the monitor): one batch
    total_steps = options.epochs * max(1, images.shape[0] // batch_size)
    entropies: list[float] = []
    for _ in range(options.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0] - batch_size + 1, batch_size):
            check_cancel(context.cancel)
            batch = prepare_batch(images[order[start:start + batch_size]], model_config, context.device)
            loss = mean_entropy(model(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            entropies.append(float(loss.detach()))
            report(context.progress, "tent", len(entropies), total_steps,
                   f"step {len(entropies)}/{total_steps} entropy {entropies[-1]:.3f}",
                   {"entropy": entropies[-1]})
    return entropies


class TentOnline(OnlineAdapter):
    """Online form (Wang et al.'s own setting): batch statistics, one Adam step on the batch entropy."""

    name = "tent"
    learns = True

    def __init__(self, model: nn.Module, model_config: ModelConfig, options: TentOptions,
                 device: torch.device) -> None:
        super().__init__(model, model_config, options, device)
        self.affine = _affine_only(self.model, require_batchnorm(self.model, "tent"))
        self.reset_state()

    def reset_state(self) -> None:
        """A fresh optimiser."""
        self.optimizer = torch.optim.Adam(self.affine, lr=self.options.lr)

    def learn(self, inputs: torch.Tensor, logits: torch.Tensor) -> None:
        loss = mean_entropy(logits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@register_strategy("tent", "entropy minimisation on BatchNorm scale/shift with batch statistics (no labels)",
                   needs_labels=False, options=TentOptions, online=TentOnline)
def tent(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
         options: TentOptions) -> tuple[nn.Module, dict[str, Any]]:
    """Target statistics first, then entropy steps on the affine part, then statistics once more."""
    layers = require_batchnorm(model, "tent")
    images = adaptation_subset(context.adapt_images, options.max_images, ADAPT_SEED)
    recompute_bn_statistics(model, model_config, images, context.device, options.batch_size,
                            cancel=context.cancel)
    entropies = _entropy_steps(model, model_config, images, context, options, _affine_only(model, layers))
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    # The affine parameters moved, so the statistics of later layers did too.
    used = recompute_bn_statistics(model, model_config, images, context.device, options.batch_size, 0.0, None,
                                   context.cancel)
    return model, {"adapt_images": used, "steps": len(entropies),
                   "entropy_first": entropies[0] if entropies else None,
                   "entropy_last": entropies[-1] if entropies else None}
