"""Continual adaptation: one model adapting online to a stream whose drift comes, changes, mixes and goes.

``ContinualAdapter`` runs a label-free strategy's online form (``zeal_core.retrain.online``) batch by
batch, next to the source model, and keeps the way back to the source:

- **Shift gate** (``zeal_core.retrain.gate``). A batch whose BatchNorm statistics look like the source's
  (calibrated without labels on clean reference batches) is served by the source model unchanged and
  teaches nothing: where nothing drifted, adaptation cannot make things worse, and a stream that turns
  clean again is served by the source at once. Needs ``reference_images``; models without BatchNorm adapt
  on every batch.
- **Collapse reset.** Entropy-driven self-training can slide into predicting one class for everything. For
  every batch the adapter compares how many classes the adapted model predicts with how many the source
  predicts on the same images (the effective number of classes, ``exp`` of the entropy of the predicted
  class histogram). Fewer than ``collapse_ratio`` times the source's for ``collapse_batches`` batches in a row
  restores the source weights: the next batch starts from the model that was trained on labels. A batch of
  few classes (a label shift) lowers both counts alike, so it does not trigger a reset.
- **Clean check.** Every ``clean_check_every`` adapted batches, the adapted model and the source classify
  the same labelled clean reference images (``reference_labels``); an adapted model below the source by
  more than ``max_clean_drop`` plus two standard errors of the paired difference is reset to the source.
  Forgetting that keeps predicting every class (a learning rate too high) is caught this way.
- **Weight ensembling** (in ``roid``) pulls the adapted weights back towards the source at every step, so
  after a drift ends the model returns to the source's clean accuracy within a few batches.

The monitor's continual mode (``MonitorConfig.continual``) and ``python -m benchmarks adapt`` both use it,
so the app shows which strategy survives a recurring or mixed drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zeal_core.config import build
from zeal_core.errors import ConfigError
from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.retrain.base import continual_strategies, parse_options, strategy_info
from zeal_core.sampling import seeded_subset


@dataclass(frozen=True)
class ContinualConfig:
    """How a stream is adapted to, batch by batch."""

    strategy: str = "roid"  # a strategy with an online form (continual_strategies())
    options: dict[str, Any] = field(default_factory=dict)  # overrides of the strategy's options
    reset_on_collapse: bool = True  # restore the source weights when the predictions collapse
    collapse_ratio: float = 0.5  # collapse: effective predicted classes < this share of the source's
    collapse_batches: int = 2  # ... for this many batches in a row
    gate: bool = True  # serve batches that look like the source's data with the source (needs references)
    clean_check_every: int = 20  # adapted batches between two clean checks (needs reference labels); 0: off
    clean_check_images: int = 256  # labelled clean reference images per check
    max_clean_drop: float = 0.02  # share: clean accuracy below the source's by more (+ 2 SE) resets

    def __post_init__(self) -> None:
        if self.strategy not in continual_strategies():
            raise ConfigError(f"continual strategy {self.strategy!r}: use one of {continual_strategies()} "
                              "(strategies that adapt without labels, batch by batch)")
        if not 0.0 < self.collapse_ratio < 1.0 or self.collapse_batches < 1:
            raise ConfigError("continual collapse_ratio must be in (0, 1) and collapse_batches >= 1")
        if self.clean_check_every < 0 or self.clean_check_images < 10 or not 0 <= self.max_clean_drop < 1:
            raise ConfigError("continual clean_check_every >= 0, clean_check_images >= 10, max_clean_drop "
                              "in [0, 1)")
        parse_options(self.strategy, self.options)  # unknown options fail here, before any work

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ContinualConfig:
        """Build from a dict (job params, command line); unknown keys raise ``ConfigError``."""
        return build(cls, values or {}, "continual adaptation")


@dataclass(frozen=True)
class ContinualStep:
    """What one stream batch gave."""

    logits: torch.Tensor  # N x C served logits of the adapted model (CPU), before it learned from the batch
    source_logits: torch.Tensor  # N x C logits of the source model, never adapted (CPU)
    effective_classes: float  # exp(entropy of the adapted model's predicted-class histogram)
    source_effective_classes: float  # the same for the source
    reset: bool  # the adapter went back to the source after this batch
    gated: bool = False  # the batch looked like the source's data: the source served it, nothing learned
    shift_score: float | None = None  # the gate's score (mean Gaussian KL per BatchNorm channel), or None


def effective_classes(logits: torch.Tensor, num_classes: int) -> float:
    """``exp`` of the entropy of the histogram of predicted classes: 1 when every image gets one class."""
    counts = torch.bincount(logits.argmax(dim=1), minlength=num_classes).float()
    shares = counts[counts > 0] / counts.sum()
    return math.exp(float(-(shares * shares.log()).sum()))


class ContinualAdapter:
    """A label-free strategy adapting online over a stream, beside the source (module docstring)."""

    def __init__(self, model: nn.Module, model_config: ModelConfig, config: ContinualConfig | None = None,
                 device: torch.device | str = "cpu", reference_images: torch.Tensor | None = None,
                 reference_labels: torch.Tensor | None = None) -> None:
        """Args:
        model: The source model (not changed: the adapter adapts a copy).
        model_config: Its config.
        config: Strategy, options, the collapse rule and the gate; defaults when None.
        device: Where to compute.
        reference_images: Clean uint8 images of the source's domain, for the shift gate; None: no gate.
        reference_labels: Their labels, for the clean check; None: no clean check.
        """
        self.config = config or ContinualConfig()
        self.device = torch.device(device)
        self.model_config = model_config
        info = strategy_info(self.config.strategy)
        options = parse_options(self.config.strategy, self.config.options)
        self.adapter = info.online(model, model_config, options, self.device)
        self.source = model.to(self.device).eval()
        self.gate = None
        if self.config.gate and reference_images is not None and reference_images.shape[0] >= 2:
            from zeal_core.retrain.gate import ShiftGate

            gate = ShiftGate(model, model_config, reference_images, self.device)
            self.gate = gate if gate.active else None
        self.check = None  # (images, labels, source's correct) of the clean check
        if reference_labels is not None and reference_images is not None and self.config.clean_check_every:
            # a seeded draw, so that a reference stored class by class still gives every class
            picked = seeded_subset(reference_images.shape[0], self.config.clean_check_images, seed=0)
            images, labels = reference_images[picked], torch.as_tensor(reference_labels)[picked]
            self.check = (images, labels, self.source_logits(images).argmax(dim=1) == labels)
        self.adapted_batches = 0  # batches the adapter learned from since the last clean check
        self.low_batches = 0  # consecutive batches with too few predicted classes
        self.batches = 0  # batches seen

    @property
    def resets(self) -> int:
        """How often the adapter went back to the source."""
        return self.adapter.resets

    @torch.no_grad()
    def source_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The source model's logits (eval mode, its own statistics), CPU."""
        return self.source(prepare_batch(images, self.model_config, self.device)).float().cpu()

    def step(self, images: torch.Tensor) -> ContinualStep:
        """Serve ``images`` (uint8 N x 3 x H x W) with the adapted model, learn, watch for a collapse.

        A batch the gate finds in-domain is served by the source instead, and nothing is learned from it.
        """
        score = None
        if self.gate is not None:
            source, score = self.gate.forward(images)
            if self.gate.in_domain(score, images.shape[0]):
                self.adapter.idle()
                self.low_batches = 0
                self.batches += 1
                classes = effective_classes(source, self.model_config.num_classes)
                return ContinualStep(logits=source, source_logits=source, effective_classes=classes,
                                     source_effective_classes=classes, reset=False, gated=True,
                                     shift_score=score)
        else:
            source = self.source_logits(images)
        logits = self.adapter.step(images)
        classes = self.model_config.num_classes
        adapted_k, source_k = effective_classes(logits, classes), effective_classes(source, classes)
        self.low_batches = self.low_batches + 1 if adapted_k < self.config.collapse_ratio * source_k else 0
        reset = self.config.reset_on_collapse and self.low_batches >= self.config.collapse_batches
        self.adapted_batches += 1
        if not reset and self.check is not None and self.adapted_batches >= self.config.clean_check_every:
            self.adapted_batches = 0
            reset = self.forgot()
        if reset:
            self.adapter.reset()
            self.low_batches = 0
        self.batches += 1
        return ContinualStep(logits=logits, source_logits=source, effective_classes=adapted_k,
                             source_effective_classes=source_k, reset=reset, shift_score=score)

    def forgot(self) -> bool:
        """The clean check: is the adapted model worse than the source on the labelled clean images?"""
        images, labels, source_correct = self.check
        correct = self.adapter.predict(images).argmax(dim=1) == labels
        n = labels.numel()
        gap = float(source_correct.float().mean() - correct.float().mean())
        discordant = int((source_correct != correct).sum())  # paired: only disagreements carry noise
        return gap > self.config.max_clean_drop + 2.0 * math.sqrt(discordant) / n

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The adapted model's served logits without learning (e.g. its clean accuracy now), CPU."""
        return self.adapter.predict(images)

    def reset(self) -> None:
        """Go back to the source now."""
        self.adapter.reset()
        self.low_batches = 0
