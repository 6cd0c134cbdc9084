"""The monitor's continual mode: the deployed model adapts online on every stream batch.

With ``MonitorConfig(continual=True)`` the alarm policy does not retrain; instead the configured label-free
strategy's online form (``zeal_core.retrain.continual.ContinualAdapter``) serves every batch and learns
from it, with its way back to the source (collapse reset, weight ensembling). The detector keeps testing
the source model's view of each batch, so alarms still say when the input drifts; "with policy" is the
accuracy of the adapted predictions, "without policy" the source's. Run the same recurring or mixed
schedule once per strategy to see which survives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zeal_core.retrain.continual import ContinualAdapter, ContinualConfig


@dataclass(frozen=True)
class ServedBatch:
    """What the continually adapted model did with one batch."""

    accuracy: float  # share of the batch's images it classified correctly (labels of the simulation)
    reset: bool  # it went back to the source after this batch (a collapse)
    gated: bool  # the batch looked like the source's data: the source served it


def start_continual(config: Any, reference: Any, device: torch.device) -> ContinualAdapter | None:
    """The continual adapter for a simulation, or None when ``config.continual`` is off.

    Args:
        config: The ``MonitorConfig`` (``strategy``, ``strategy_options``, ``continual``).
        reference: The ``FittedReference`` of the starting model (its model and card).
        device: Where to compute.
    """
    if not getattr(config, "continual", False) or config.strategy is None:
        return None
    continual = ContinualConfig(strategy=config.strategy, options=dict(config.strategy_options or {}))
    source = reference.source
    # The shift gate is calibrated on the clean reference images; the clean check reads their labels.
    positions = torch.from_numpy(np.asarray(reference.reference.indices).copy())
    return ContinualAdapter(source.model, source.card.model_config, continual, device,
                            reference_images=source.split_images[positions],
                            reference_labels=torch.from_numpy(np.array(reference.reference.labels)))


def serve(adapter: ContinualAdapter, images: torch.Tensor, labels: Any) -> ServedBatch:
    """Predict one stream batch with the adapted model, let it learn from the batch, score the predictions."""
    step = adapter.step(images)
    labels = torch.as_tensor(labels)
    accuracy = float((step.logits.argmax(dim=1) == labels).float().mean()) if labels.numel() else 0.0
    return ServedBatch(accuracy=accuracy, reset=step.reset, gated=step.gated)
