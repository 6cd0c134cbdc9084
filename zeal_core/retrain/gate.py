r"""The shift gate: does this batch look like the data the source model was trained on?

Continual adaptation should change nothing where nothing changed. The gate compares each batch's BatchNorm
input statistics with the source model's running statistics, layer by layer: the score is the mean, over
layers and channels, of the Gaussian Kullback-Leibler divergence

.. math:: \mathrm{KL}(\mathcal N(\mu_b, \sigma_b^2)\,\|\,\mathcal N(\mu_s, \sigma_s^2)) =
   \tfrac12\left(\log\frac{\sigma_s^2}{\sigma_b^2}
   + \frac{\sigma_b^2 + (\mu_b - \mu_s)^2}{\sigma_s^2} - 1\right)

(b: the batch, s: the source). Even a clean batch scores above zero (64 images do not give the exact
statistics), so the threshold is calibrated, without labels, on clean reference batches of the stream's
batch size: ``margin`` (1) times the largest score of ``trials`` (20) seeded batches, so about one clean
batch in 20 still counts as shifted (and is adapted to, which costs little). A batch scoring at most that is
served by the source model unchanged and teaches the adapter nothing; a batch above it is adapted to.
Measured on the Imagenette 64 px model (batches of 64): clean 0.008-0.02; pixelate, JPEG and elastic at
severity 5 0.003-0.016 (adaptation does not help them); zoom, motion and glass blur 0.02-0.034 (it does:
+2 to +10 points); noise 0.05-0.08; snow, frost, fog, brightness and contrast 0.13-0.5. Models without
BatchNorm have no gate (every batch is adapted to).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from zeal_core.models.factory import ModelConfig, prepare_batch

EPS = 1e-5  # variance floor, as BatchNorm's own eps


class ShiftGate:
    """Scores batches against the source's BatchNorm statistics (module docstring)."""

    def __init__(self, model: nn.Module, model_config: ModelConfig, reference_images: torch.Tensor,
                 device: torch.device, trials: int = 20, margin: float = 1.0, seed: int = 0) -> None:
        """Args:
        model: The source model (the gate keeps its own copy, with hooks on its BatchNorm layers).
        model_config: Its config.
        reference_images: Clean uint8 images of the source's domain (labels not needed).
        device: Where to compute.
        trials: Clean batches per calibration (per batch size).
        margin: The threshold is this times the largest clean score.
        seed: Seeds the calibration batches.
        """
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.model_config = model_config
        self.reference = reference_images
        self.trials, self.margin, self.seed = trials, margin, seed
        self.layers = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.running_mean is not None]
        self.thresholds: dict[int, float] = {}  # batch size -> calibrated threshold
        self._divergences: list[torch.Tensor] = []
        for layer in self.layers:
            layer.register_forward_pre_hook(self._record)

    @property
    def active(self) -> bool:
        """Whether the model has BatchNorm statistics to compare with (else every batch counts as shifted)."""
        return bool(self.layers)

    def _record(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not self._recording:
            return
        values = inputs[0].detach().float()
        dims = [0, *range(2, values.dim())]
        mean, var = values.mean(dim=dims), values.var(dim=dims, unbiased=False).clamp_min(EPS)
        source_mean, source_var = layer.running_mean.float(), layer.running_var.float().clamp_min(EPS)
        divergence = 0.5 * ((source_var / var).log() + (var + (mean - source_mean) ** 2) / source_var - 1)
        self._divergences.append(divergence.mean())

    _recording = False

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(The source model's logits on ``images`` (CPU), the batch's shift score)."""
        self._divergences, self._recording = [], True
        try:
            logits = self.model(prepare_batch(images, self.model_config, self.device)).float().cpu()
        finally:
            self._recording = False
        score = float(torch.stack(self._divergences).mean()) if self._divergences else float("inf")
        return logits, score

    def threshold(self, batch_size: int) -> float:
        """``margin`` x the largest score of clean reference batches of ``batch_size`` (calibrated once)."""
        if batch_size not in self.thresholds:
            generator = torch.Generator().manual_seed(self.seed + batch_size)
            size = min(batch_size, self.reference.shape[0])
            scores = [self.forward(self.reference[torch.randperm(self.reference.shape[0],
                                                                 generator=generator)[:size]])[1]
                      for _ in range(self.trials)]
            self.thresholds[batch_size] = self.margin * max(scores)
        return self.thresholds[batch_size]

    def in_domain(self, score: float, batch_size: int) -> bool:
        """Whether a batch with this score looks like the source's data."""
        return self.active and score <= self.threshold(batch_size)
