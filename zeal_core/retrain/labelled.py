"""What the labelled strategies (finetune, retrain) share: the corruption augmentation and the recipe."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from zeal_core.errors import ConfigError
from zeal_core.models.factory import ModelConfig
from zeal_core.progress import ProgressCallback
from zeal_core.retrain.base import AdaptContext


def corruption_augment_text(drift: Any, max_severity: float) -> str:
    """The ``TrainConfig.corruption_augment`` text for a drift: its corruptions at ``max_severity``.

    For ``gaussian_noise:3`` and 5 that is ``gaussian_noise:5``; training then corrupts a share of each
    batch with a random severity in [5/4, 5] per batch (see ``zeal_core.train``), so the model sees the
    corruption family across severities rather than the one level it will be scored on.
    """
    if not 0 < max_severity <= 5:
        raise ConfigError(f"max_severity must be in (0, 5], got {max_severity}")
    names = list(dict.fromkeys(name for name, _ in drift.steps))
    if not names:
        raise ConfigError("finetune and retrain need a drift with at least one corruption, not 'clean'")
    return "+".join(f"{name}:{max_severity:g}" for name in names)


def selection_images(images: torch.Tensor, drift: Any, max_severity: float, seed: int) -> torch.Tensor:
    """Validation images each corrupted by the drift's corruptions at one of the severities 1..max.

    Used only to choose among checkpoints; it shares the drift's corruption family, not its severity or
    noise draw, with the drifted images ``adapt`` scores on.
    """
    from zeal_core import corruptions

    levels = [float(level) for level in range(1, int(max_severity) + 1)] or [max_severity]
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(levels), (images.shape[0],), generator=generator)
    out = images.clone()
    for index, level in enumerate(levels):
        mask = choice == index
        if mask.any():
            part = images[mask]
            for name, _ in drift.steps:
                part = corruptions.apply(part, name, level, seed=seed + index)
            out[mask] = part
    return out


def train_config(context: AdaptContext, model_config: ModelConfig, epochs: int, lr_scale: float,
                 max_severity: float, corruption_share: float) -> Any:
    """The dataset's default recipe at the model's size, with a scaled learning rate and the drift's
    corruptions as augmentation."""
    from zeal_core.train import default_config

    base = default_config(context.dataset.name, gpu=context.device.type == "cuda")
    return replace(base, epochs=epochs, lr=base.lr * lr_scale,
                   corruption_augment=corruption_augment_text(context.drift, max_severity),
                   corruption_share=corruption_share, image_size=model_config.image_size,
                   arch=model_config.arch)


def epoch_progress(progress: ProgressCallback | None, epoch: int, epochs: int) -> ProgressCallback | None:
    """Map one epoch's training events onto the whole run (done = epochs finished, in epochs)."""
    if progress is None:
        return None

    def forward(event: Any) -> None:
        fraction = event.fraction or 0.0
        progress(replace(event, done=epoch + fraction, total=epochs,
                         message=f"epoch {epoch + 1}/{epochs}: {event.message}"))

    return forward
