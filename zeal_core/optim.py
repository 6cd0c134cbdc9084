"""The optimiser, learning-rate schedule and weight average of a training run (``zeal_core.train``).

``warmup_fraction`` is the share of all steps spent rising; weight decay never applies to biases and
normalisation scales.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of a model's parameters and buffers (evaluated instead of the model)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        # state_dict() tensors alias the live parameters and buffers, so these lists stay current.
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
        self.float_pairs = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
        self.other_pairs = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the model (after each optimiser step)."""
        self.updates += 1
        # Warm-up: early averages follow the model closely instead of the random start.
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine, theirs = zip(*self.float_pairs, strict=True)
        torch._foreach_lerp_(list(mine), list(theirs), 1 - decay)
        for mine_other, theirs_other in self.other_pairs:
            mine_other.copy_(theirs_other)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weights decayed, biases and norm scales (1-d) not."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, name: str, *, lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    """AdamW for ``name="adamw"``, else SGD (Nesterov momentum when ``momentum > 0``) on ``param_groups``."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, warmup_fraction: float,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Per-step learning-rate factor (times the optimiser's lr); None for ``schedule="constant"``.

    one-cycle: linear rise from lr/25 to lr over the warm-up share, then cosine down to about 0;
    cosine: linear rise from 0 to lr, then cosine down to 0. Both work for any number of steps (even 1).
    """
    if schedule == "constant":
        return None
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    start = 1 / 25 if schedule == "onecycle" else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * (step + 1) / warmup
        progress = min(1.0, (step - warmup + 1) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) + 1e-4 * start

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
