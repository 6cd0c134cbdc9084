"""Online (test-time) adaptation: a model that predicts each incoming batch, then learns from it.

Every label-free strategy has an online form, an ``OnlineAdapter`` subclass registered with the strategy
(``register_strategy(..., online=...)``). The same object serves three callers:

- the episodic ``adapt`` (one version saved from a set of drifted images): ``run_online`` passes the images
  through ``step`` and ``export`` turns the result into an ordinary eval-mode model;
- the monitor's continual mode and the adaptation benchmark (``zeal_core.retrain.continual``): ``step``
  once per stream batch, the predictions it returns are what the deployed system serves;
- ``reset`` restores the source weights (the way back after a collapse).

``step`` predicts first and learns second, as online test-time adaptation does: the logits it returns come
from the forward pass the update is computed from, so a batch is never predicted by a model that has seen
its own gradient.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report
from zeal_core.retrain.batchnorm import batchnorm_layers, recompute_bn_statistics
from zeal_core.retrain.norm import batch_statistics


class OnlineAdapter:
    """Base class: batch statistics in BatchNorm, no learning (subclasses add ``learn``).

    Subclasses set ``name`` and may override ``learn(inputs, logits)`` (take a gradient step from this
    batch's forward pass), ``serve(logits)`` (e.g. a prior correction of the served predictions) and
    ``reset_state`` (their optimiser and running averages).
    """

    name: ClassVar[str] = "batch-statistics"
    learns: ClassVar[bool] = False  # True when step() changes weights (needs gradients)

    def __init__(self, model: nn.Module, model_config: ModelConfig, options: Any,
                 device: torch.device) -> None:
        """Args:
        model: The source model; the adapter works on a copy, so the caller's model never changes.
        model_config: Its config (input size and normalisation).
        options: The strategy's options dataclass (``source_share`` is read when present).
        device: Where to compute.
        """
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.model_config = model_config
        self.options = options
        self.source_share = float(getattr(options, "source_share", 0.0))
        self.source_state = {name: tensor.detach().clone()
                             for name, tensor in self.model.state_dict().items()}
        self.steps = 0  # learning steps since the start or the last reset
        self.resets = 0  # how often reset() restored the source

    # ------------------------------------------------------------------------------------------ stream
    def step(self, images: torch.Tensor) -> torch.Tensor:
        """Predict ``images`` (uint8 N x 3 x H x W), then learn from them; returns the served logits (CPU)."""
        inputs = prepare_batch(images, self.model_config, self.device)
        with batch_statistics(self.model, self.source_share):
            if not self.learns:
                with torch.no_grad():
                    return self.serve(self.model(inputs).float()).cpu()
            with torch.enable_grad():
                logits = self.model(inputs).float()
                served = self.serve(logits.detach())
                self.learn(inputs, logits)
        self.steps += 1
        return served.cpu()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The served logits of ``images`` without learning from them (CPU)."""
        inputs = prepare_batch(images, self.model_config, self.device)
        with batch_statistics(self.model, self.source_share):
            return self.serve(self.model(inputs).float()).cpu()

    def learn(self, inputs: torch.Tensor, logits: torch.Tensor) -> None:
        """One update from this batch's forward pass (``logits`` carry the graph). Default: none."""

    def serve(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits served for this batch (detached). Default: unchanged."""
        return logits

    def idle(self) -> None:
        """A batch was served without adapting (the shift gate found it in-domain). Default: nothing."""

    def reset(self) -> None:
        """Restore the source weights and forget everything learned (optimiser state, running averages)."""
        self.model.load_state_dict(self.source_state)
        self.steps = 0
        self.resets += 1
        self.reset_state()

    def reset_state(self) -> None:
        """Subclasses: clear the optimiser and running averages."""

    # ---------------------------------------------------------------------------------------- a version
    def export(self, images: torch.Tensor | None, batch_size: int = 128, source_share: float | None = None,
               cancel: CancelToken | None = None) -> nn.Module:
        """An ordinary eval-mode model holding what was learned (a copy; the adapter keeps adapting).

        BatchNorm running statistics are re-estimated on ``images`` (the adaptation images, uint8) with the
        adapted weights, blended with the source's by ``source_share`` (default: the adapter's), so the
        saved version behaves like the adapter in eval mode and needs no batch at inference. Models
        without BatchNorm, or no images, keep their statistics.
        """
        model = copy.deepcopy(self.model).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if images is not None and images.shape[0] >= 2 and batchnorm_layers(model):
            share = self.source_share if source_share is None else float(source_share)
            recompute_bn_statistics(model, self.model_config, images, self.device, batch_size, share, None,
                                    cancel)
        return model


def run_online(adapter: OnlineAdapter, images: torch.Tensor, batch_size: int, epochs: int, seed: int,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[float]:
    """Pass ``images`` through ``adapter.step`` in shuffled batches, ``epochs`` times.

    A last batch smaller than half ``batch_size`` is left out (its statistics would be noise).

    Returns:
        The mean entropy (nats) of each batch's served predictions, in order.
    """
    generator = torch.Generator().manual_seed(seed)
    size = max(2, min(batch_size, images.shape[0]))
    total_images = images.shape[0]
    starts = [start for start in range(0, total_images, size) if total_images - start >= max(2, size // 2)]
    total = epochs * len(starts)
    entropies: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in starts:
            check_cancel(cancel)
            logits = adapter.step(images[order[start:start + size]])
            log_probs = torch.log_softmax(logits, dim=1)
            entropies.append(float(-(log_probs.exp() * log_probs).sum(dim=1).mean()))
            report(progress, adapter.name, len(entropies), total,
                   f"step {len(entropies)}/{total} entropy {entropies[-1]:.3f}", {"entropy": entropies[-1]})
    return entropies
