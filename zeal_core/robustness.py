"""Robustness table: top-1 accuracy of one model on clean images and on every (corruption, severity) of them.

The corrupted-image counterpart of ``zeal_core.evaluate`` (which scores one labelled set): the same
``predict_logits`` forward pass, run once clean and once per cell of a corruption x severity grid. It sits
beside ``evaluate`` rather than inside it because it also needs the corruption library and the resize step;
``evaluate`` stays the plain scorer that training and the pages import without either.

The mean corruption error follows ImageNet-C (Hendrycks & Dietterich, 2019) without its AlexNet
normalisation: ``MCE_DEFINITION`` states it in words, and every report that prints an mCE quotes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["MCE_DEFINITION", "RobustnessTable", "robustness_table"]

# How the mean corruption error is defined in every table and report.
MCE_DEFINITION = (
    "mean corruption error (mCE, unnormalised) = mean over the ImageNet-C corruptions and severities of the "
    "top-1 error (1 - accuracy) on the corrupted validation images (the other drift kinds are in the "
    "table but not in the mCE, so it stays comparable with ImageNet-C); ImageNet-C's normalisation by an "
    "AlexNet baseline "
    "is not used (there is no baseline model for these datasets). The relative mCE is mCE minus the clean "
    "error, i.e. how much error the corruptions add."
)


@dataclass(frozen=True)
class RobustnessTable:
    """Accuracy of one model on clean and corrupted validation images."""

    clean_accuracy: float  # top-1 share correct on the clean images
    rows: tuple[tuple[str, float, float], ...]  # (corruption, severity, accuracy)
    n: int  # validation images per cell
    seconds: float  # wall time, s
    mce_kinds: tuple[str, ...] = ()  # kinds the mCE averages (ImageNet-C); empty = every row

    def corruption_means(self) -> dict[str, float]:
        """Mean accuracy over severities, per corruption."""
        means: dict[str, list[float]] = {}
        for name, _, accuracy in self.rows:
            means.setdefault(name, []).append(accuracy)
        return {name: float(np.mean(values)) for name, values in means.items()}

    @property
    def mean_corruption_error(self) -> float:
        """Unnormalised mCE: mean error over the ImageNet-C cells (see ``MCE_DEFINITION``)."""
        errors = [1.0 - accuracy for name, _, accuracy in self.rows
                  if not self.mce_kinds or name in self.mce_kinds]
        return float(np.mean(errors)) if errors else math.nan

    @property
    def relative_mce(self) -> float:
        """mCE minus the clean error: the error the corruptions add."""
        return self.mean_corruption_error - (1.0 - self.clean_accuracy)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary for ``dvc metrics`` (numbers only; ``MCE_DEFINITION`` says what mCE is)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "mean_corruption_error": self.mean_corruption_error,
            "relative_mce": self.relative_mce,
            "mean_corrupted_accuracy": 1.0 - self.mean_corruption_error,
            "n": self.n,
            "seconds": round(self.seconds, 2),
            "corruption_accuracy": self.corruption_means(),
        }


def robustness_table(
    model: torch.nn.Module,
    model_config: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    corruptions: Sequence[str],
    severities: Sequence[float],
    *,
    device: torch.device | str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    resize_first: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> RobustnessTable:
    """Top-1 accuracy on clean images and on every (corruption, severity) version of them.

    Args:
        model: The classifier (eval mode is set by the predictor).
        model_config: Its ``ModelConfig`` (input size).
        images: uint8 N x 3 x H x W validation images.
        labels: int64 N true classes.
        corruptions: Pixel drift kinds (``zeal_core.corruptions.list_drift_kinds()``: ImageNet-C and more).
        severities: Severity levels in (0, 5].
        device: Where to run the model.
        seed: Seed of the corruptions' randomness (same images, same noise in every run).
        batch_size: Images per forward pass.
        resize_first: Resize to the model's input size before corrupting (what the model sees is the same
            kind of image; corrupting 64 px instead of 160 px images is about 6x cheaper).
        progress: Receives one ``evaluate`` event per cell.
        cancel: Checked between cells.
    """
    from zeal_core.augment import resize_uint8
    from zeal_core.corruptions import apply, list_corruptions
    from zeal_core.evaluate import predict_logits

    start = time.perf_counter()
    if resize_first:
        images = resize_uint8(images, model_config.image_size)

    def accuracy(batch: torch.Tensor) -> float:
        logits = predict_logits(model, model_config, batch, device, batch_size)
        return float((logits.argmax(dim=1) == labels).float().mean())

    clean = accuracy(images)
    rows: list[tuple[str, float, float]] = []
    total = len(corruptions) * len(severities)
    for name in corruptions:
        for severity in severities:
            check_cancel(cancel)
            corrupted = apply(images, name, float(severity), seed=seed)
            rows.append((name, float(severity), accuracy(corrupted)))
            report(progress, "evaluate", len(rows), total, f"{name} severity {severity}: {rows[-1][2]:.1%}")
    imagenet_c = tuple(name for name in corruptions if name in set(list_corruptions()))
    return RobustnessTable(clean_accuracy=clean, rows=tuple(rows), n=int(images.shape[0]),
                           seconds=time.perf_counter() - start, mce_kinds=imagenet_c or tuple(corruptions))
