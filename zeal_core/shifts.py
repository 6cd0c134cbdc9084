"""A bank of synthetic shifts: reference images under every registered corruption at several severities.

Label-free accuracy estimators that learn from synthetic shifts and the drift diagnosis's signatures both
need to know how the model reacts to each kind of drift. The bank holds that reaction once: the same
reference images corrupted by each spec and embedded by the model (features, logits, labels). Whatever is
fitted on the bank must be scored on other images (the sample half of the split) and, for estimators, on
corruptions it was not fitted on (leave one corruption out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from zeal_core.corruptions import DriftSpec, list_corruptions
from zeal_core.device import resolve_device
from zeal_core.embed import Embeddings, compute_embeddings
from zeal_core.errors import ConfigError
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    from torch import nn

    from zeal_core.models import ModelConfig

DEFAULT_SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)  # ImageNet-C's levels
_SPEC_SEED_STRIDE = 7919  # spec i of a bank corrupts with seed * stride + i: no two specs share noise


@dataclass(frozen=True)
class ShiftedSet:
    """The reference images under one synthetic shift, as the model sees them."""

    spec: DriftSpec  # the shift applied to every image (fraction 1)
    embeddings: Embeddings  # features, logits, probs and true labels of the shifted images

    @property
    def corruption(self) -> str:
        """The shift's (first) corruption name: the unit a leave-one-corruption-out split holds out."""
        return self.spec.steps[0][0] if self.spec.steps else "clean"

    @property
    def severity(self) -> float:
        """The shift's (first) severity, 0 for clean."""
        return float(self.spec.steps[0][1]) if self.spec.steps else 0.0


def bank_specs(kinds: Sequence[str] | None = None,
               severities: Sequence[float] = DEFAULT_SEVERITIES) -> list[DriftSpec]:
    """One single-step spec per kind and severity (kinds default to every ImageNet-C corruption).

    Raises:
        ConfigError: An unknown kind, or a severity outside (0, 5].
    """
    names = list(kinds) if kinds is not None else list_corruptions()
    if not names or not severities:
        raise ConfigError("a shift bank needs at least one kind and one severity")
    specs = []
    for name in names:
        for severity in severities:
            if not 0 < float(severity) <= 5:
                raise ConfigError(f"bank severity {severity!r} must be in (0, 5]")
            specs.append(DriftSpec(steps=((name, float(severity)),)))
    return specs


def build_shift_bank(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
                     labels: torch.Tensor, specs: Sequence[DriftSpec], device: str | torch.device = "auto",
                     *, seed: int = 0, batch_size: int = 256, progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> tuple[ShiftedSet, ...]:
    """Corrupt ``images`` with every spec and embed each result.

    Args:
        model: The classifier (eval mode; not changed).
        model_config: Its config (input size, normalisation).
        images: uint8 N x 3 x H x W reference images (never the images a fitted thing is scored on).
        labels: int64 N true labels, in the model's label space.
        specs: The shifts, e.g. ``bank_specs()``; each is applied to every image.
        device: Where to corrupt and embed (the images move there once).
        seed: Seeds the corruptions' noise (spec i uses ``seed * 7919 + i``).
        batch_size: Images per forward pass.
        progress: Receives one ``shift-bank`` event per spec.
        cancel: Checked between specs.

    Returns:
        One ``ShiftedSet`` per spec, in order.
    """
    device = resolve_device(device)
    on_device = images.to(device)
    bank = []
    for index, spec in enumerate(specs):
        check_cancel(cancel)
        shifted = DriftSpec(steps=spec.steps).apply(on_device, seed=int(seed) * _SPEC_SEED_STRIDE + index)
        embedded = compute_embeddings(model, model_config, shifted, device, labels=labels,
                                      batch_size=batch_size)
        bank.append(ShiftedSet(spec=spec, embeddings=replace_spec(embedded, spec)))
        report(progress, "shift-bank", index + 1, len(specs), f"embedded {spec.text}")
    return tuple(bank)


def replace_spec(embeddings: Embeddings, spec: DriftSpec) -> Embeddings:
    """``embeddings`` labelled with the spec that made them (every item affected)."""
    return dataclasses.replace(embeddings, spec=spec.text, affected=np.ones(len(embeddings), dtype=bool))
