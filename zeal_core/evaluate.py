"""Evaluation: logits for a set of images, top-1 accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from zeal_core.device import resolve_device
from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report


@dataclass(frozen=True)
class EvalResult:
    """How well a model classifies a labelled set of images."""

    accuracy: float  # top-1 share correct in [0, 1]
    per_class_accuracy: dict[str, float | None]  # class name -> share correct (None: no images)
    confusion: list[list[int]]  # counts, row = true class, column = predicted class
    n: int  # images evaluated
    class_names: tuple[str, ...] = field(default=())  # row/column names of ``confusion``

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"accuracy": self.accuracy, "per_class_accuracy": dict(self.per_class_accuracy),
                "confusion": [list(row) for row in self.confusion], "n": self.n,
                "class_names": list(self.class_names)}


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    model_config: ModelConfig,
    images: torch.Tensor,
    device: torch.device | str = "auto",
    batch_size: int = 256,
    *,
    flip_tta: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """float32 logits (N x classes, on the CPU) for uint8 N x 3 x H x W images, in batches.

    Args:
        model: The network; it is put in eval mode and moved to ``device`` (and left so).
        model_config: Sets the input size the images are resized to.
        images: uint8 images on any device.
        device: Where to run (``"auto"`` picks the GPU when there is one).
        batch_size: Images per forward pass.
        flip_tta: Average the logits of each image and its mirror image (test-time augmentation).
        progress: Receives one ``evaluate`` event per batch.
        cancel: Checked between batches.
    """
    device = resolve_device(device)
    model.eval()
    model_device = next(model.parameters()).device
    if model_device != device:
        model.to(device)
    outputs = []
    total = images.shape[0]
    for start in range(0, total, batch_size):
        check_cancel(cancel)
        inputs = prepare_batch(images[start:start + batch_size], model_config, device)
        with autocast_for(device):
            logits = model(inputs)
            if flip_tta:
                logits = (logits + model(inputs.flip(-1))) / 2
        outputs.append(logits.float().cpu())
        report(progress, "evaluate", min(start + batch_size, total), total)
    if not outputs:
        return torch.empty((0, model_config.num_classes))
    return torch.cat(outputs)


def summarize_predictions(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          class_names: tuple[str, ...] | list[str] | None = None) -> EvalResult:
    """Accuracy, per-class accuracy and confusion matrix from predicted and true class indices."""
    predictions, labels = predictions.cpu().long(), labels.cpu().long()
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    confusion = confusion[: num_classes * num_classes].view(num_classes, num_classes)
    per_class_total = confusion.sum(dim=1)
    per_class: dict[str, float | None] = {}
    for index, name in enumerate(names[:num_classes]):
        count = int(per_class_total[index])
        per_class[name] = float(confusion[index, index]) / count if count else None
    n = int(labels.numel())
    accuracy = float((predictions == labels).sum()) / n if n else 0.0
    return EvalResult(accuracy=accuracy, per_class_accuracy=per_class, confusion=confusion.tolist(), n=n,
                      class_names=names[:num_classes])


def evaluate(
    model: nn.Module,
    model_config: ModelConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device | str = "auto",
    class_names: tuple[str, ...] | list[str] | None = None,
    *,
    batch_size: int = 256,
    flip_tta: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> EvalResult:
    """Top-1 accuracy, per-class accuracy and confusion matrix of ``model`` on labelled uint8 images.

    Args:
        model: The network.
        model_config: Its config (input size, number of classes).
        images: uint8 N x 3 x H x W.
        labels: int N, true class indices.
        device: Where to run.
        class_names: Names for the per-class keys; class indices as text when None.
        batch_size: Images per forward pass.
        flip_tta: Average each image's logits with its mirror image's.
        progress: Receives per-batch events.
        cancel: Checked between batches.
    """
    logits = predict_logits(model, model_config, images, device, batch_size, flip_tta=flip_tta,
                            progress=progress, cancel=cancel)
    return summarize_predictions(logits.argmax(dim=1), labels, model_config.num_classes, class_names)
