"""Training: one loop for CPU, one GPU, or many GPUs/nodes (``torchrun``), with progress and cancel.

Where the speed comes from: the whole uint8 training split is moved to the device once (resized once to
about the training size); each step gathers a batch by index, augments it there (random-resized-crop and
flip for the whole batch in one ``grid_sample``, see ``zeal_core.augment``), and runs the model under bf16
autocast with channels-last memory on CUDA (optionally ``torch.compile``). No DataLoader, no PIL, no worker
processes.

Recipes: the default is SGD with Nesterov momentum, a one-cycle learning rate and label smoothing;
``optimizer="adamw"`` with ``schedule="constant"`` reproduces the original project's reference recipe (see
``reference_config``).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core import distributed
from zeal_core.augment import augment_batch, check_augmentations, resize_uint8
from zeal_core.config import build
from zeal_core.data import ImageDataset, load_dataset
from zeal_core.device import describe_device, resolve_device
from zeal_core.errors import ConfigError, DataError, ModelError
from zeal_core.evaluate import autocast_for, evaluate
from zeal_core.models.factory import ModelConfig, build_model
from zeal_core.optim import WeightAverage, make_optimizer, make_schedule
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

if TYPE_CHECKING:
    from zeal_core.models.registry import ModelCard, ModelRegistry

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Every field is stored in the model card's ``recipe``."""

    arch: str = "resnet18"  # timm model name
    pretrained: bool = False  # start from timm hub ImageNet weights (scratch, with a warning, when offline)
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # images per step and per process
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.2  # peak learning rate (one-cycle/cosine) or the constant rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 / decoupled decay on weights (not on biases and norm parameters)
    label_smoothing: float = 0.1  # share of target mass spread over all classes
    schedule: str = "onecycle"  # "onecycle", "cosine" (linear warm-up, cosine to 0) or "constant"
    warmup_fraction: float = 0.25  # share of steps spent rising to the peak learning rate
    image_size: int = 64  # px, square model input side for training and evaluation
    seed: int = 0  # seeds weights, shuffling and augmentation so runs repeat
    augmentations: tuple[str, ...] = ("crop", "flip")  # on-device batch augmentations, see zeal_core.augment
    crop_scale: tuple[float, float] = (0.35, 1.0)  # random-resized-crop area range, share of the image
    corruption_augment: str | None = None  # drift-spec text; batches get corrupted copies (random severity)
    corruption_share: float | None = None  # share of each batch corrupted; None = the spec's @fraction
    ema_decay: float | None = None  # evaluate a moving average of the weights (e.g. 0.999); None = off
    flip_tta: bool = False  # validation averages each image's logits with its mirror image's
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # channels-last memory on CUDA (ignored on the CPU)
    compile: bool = False  # torch.compile the model on CUDA (slow first steps, faster after)
    eval_each_epoch: bool = True  # validate after every epoch (history, time-to-accuracy), else at the end
    max_seconds: float | None = None  # stop after this much training time (s), then validate; None = no limit
    stop_at_accuracy: float | None = None  # stop once validation accuracy reaches this share; None = never
    log_interval_s: float = 1.0  # seconds between progress events (0 = every step)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field and its allowed range."""
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.batch_size >= 2, "batch_size", "an integer >= 2"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", "a finite number > 0"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", ">= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
            (0 <= self.warmup_fraction < 1, "warmup_fraction", "in [0, 1)"),
            (8 <= self.image_size <= 1024, "image_size", "between 8 and 1024 px"),
            (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale", "0 < min <= max <= 1"),
            (self.corruption_share is None or 0 < self.corruption_share <= 1, "corruption_share",
             "in (0, 1]"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", "in (0, 1) or None"),
            (self.max_seconds is None or self.max_seconds > 0, "max_seconds", "> 0 or None"),
            (self.stop_at_accuracy is None or 0 < self.stop_at_accuracy <= 1, "stop_at_accuracy",
             "in (0, 1]"),
            (self.log_interval_s >= 0, "log_interval_s", ">= 0"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"training setting {name}={value!r} is invalid: use {allowed}")
        check_augmentations(self.augmentations)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        values = asdict(self)
        values["augmentations"] = list(self.augmentations)
        values["crop_scale"] = list(self.crop_scale)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "training recipe") -> TrainConfig:
        """Inverse of ``to_dict``, strictly: an unknown key is a ``ConfigError`` naming ``where`` and the
        known fields. A stored recipe (a card's ``recipe``, which may hold extra keys such as ``init``, or
        keys of an older lab) goes through ``zeal_core.config.known_fields`` first."""
        return build(cls, values, where)


@dataclass(frozen=True)
class TrainResult:
    """What training produced."""

    model: nn.Module  # the trained network, in eval mode, on the training device
    model_config: ModelConfig  # how to rebuild it
    history: list[dict[str, Any]]  # one entry per epoch: losses, accuracies, seconds, images/s
    metrics: dict[str, Any]  # final val accuracy, per-class accuracy, throughput, timings
    seconds: float  # wall time of the whole call, s
    warnings: tuple[str, ...] = field(default=())  # e.g. the pretrained fallback message


def default_config(dataset_name: str, *, gpu: bool | None = None) -> TrainConfig:
    """A small, fast recipe per dataset.

    Args:
        dataset_name: ``"digits"``, ``"imagenette"`` or ``"folder:PATH"``.
        gpu: Pick the GPU recipe (larger images, more epochs); default: whether CUDA is visible.
    """
    if gpu is None:
        gpu = torch.cuda.is_available()
    if dataset_name == "digits":
        # 32 px native; digits are not mirror-symmetric, so no flip. 6 epochs: >= 97 % val from epoch 4.
        return TrainConfig(epochs=6, batch_size=64, lr=0.1, image_size=32, augmentations=("crop",),
                           crop_scale=(0.6, 1.0), weight_decay=5e-4)
    if dataset_name == "imagenette":
        if gpu:
            # Not yet measured on a GPU: 40 epochs at 128 px is about 380k images, ~15 s at 30k images/s.
            return TrainConfig(epochs=40, batch_size=256, lr=0.4, image_size=128)
        # 2 CPU cores: 64 px keeps an epoch near a minute on a quiet machine.
        return TrainConfig(epochs=8, batch_size=128, lr=0.2, image_size=64)
    return TrainConfig(epochs=10, batch_size=64, lr=0.1, image_size=64)


def reference_config() -> TrainConfig:
    """The original project's reference recipe: AdamW lr 1e-3, wd 0.01, batch 64, ls 0.1, 224 px, 10 epochs.

    Its learning rate is constant (no schedule) and its crop is torchvision's default (area 8-100 %).
    """
    return TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01, batch_size=64, label_smoothing=0.1,
                       image_size=224, epochs=10, schedule="constant", crop_scale=(0.08, 1.0))


class _BatchCorrupter:
    """Replaces a share of each training batch with corrupted copies, by a drift spec, random severities."""

    def __init__(self, spec_text: str, share: float | None, seed: int) -> None:
        try:
            from zeal_core.corruptions import DriftSpec, apply
        except ImportError as error:
            raise ConfigError(f"corruption_augment={spec_text!r} needs zeal_core.corruptions, which could "
                              f"not be imported ({error}); train without corruption_augment") from error
        self.spec = DriftSpec.parse(spec_text)
        self.apply = apply
        self.share = share if share is not None else float(self.spec.fraction)
        self.random = random.Random(seed)

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        count = round(self.share * images.shape[0])
        if count == 0 or self.spec.is_clean:
            return images
        # The batch is already in random order, so its first ``count`` images are a random subset.
        part = images[:count]
        for name, severity in self.spec.steps:
            # Severity drawn per batch in [severity / 4, severity], so the model sees mild and strong cases.
            part = self.apply(part, name, self.random.uniform(severity / 4, severity), seed=step)
        return torch.cat([part, images[count:]])


def _resolve_model(dataset: ImageDataset, config: TrainConfig, init_model: nn.Module | None,
                   model_config: ModelConfig | None) -> tuple[nn.Module, ModelConfig, str | None]:
    if model_config is None:
        model_config = ModelConfig(arch=config.arch, num_classes=dataset.num_classes,
                                   image_size=config.image_size, pretrained=config.pretrained)
    if model_config.num_classes != dataset.num_classes:
        raise ModelError(f"the model has {model_config.num_classes} classes but dataset {dataset.name} has "
                         f"{dataset.num_classes}: train a new model for this dataset")
    if init_model is not None:
        # A copy, so the caller's (possibly cached, shared) model is never changed.
        return copy.deepcopy(init_model), model_config, None
    model, warning = build_model(model_config)
    return model, model_config, warning


@dataclass
class _Run:
    """Everything one training run holds while it runs (built by ``_prepare``)."""

    config: TrainConfig  # the recipe
    dataset: ImageDataset  # the data
    device: torch.device  # where it trains
    model: nn.Module  # the network (what is saved)
    model_config: ModelConfig  # how to rebuild it
    network: nn.Module  # what the steps call: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer  # over the model's parameters
    schedule: Any  # the learning-rate schedule, or None for a constant rate
    average: WeightAverage | None  # the weight average evaluated instead of the model, or None
    corrupter: _BatchCorrupter | None  # corruption augmentation, or None
    train_images: torch.Tensor  # uint8, on the device, at about the training size
    train_labels: torch.Tensor  # int64, on the device
    batch_size: int  # images per step and process
    steps_per_epoch: int  # steps of one epoch on this process
    say: ProgressCallback | None  # progress (rank 0 only)
    augment_generator: torch.Generator  # crop/flip draws, on the device
    shuffle_generator: torch.Generator  # epoch order, on the CPU
    channels_last: bool  # channels-last inputs (CUDA)
    warnings: tuple[str, ...] = ()  # e.g. the pretrained fallback message
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    train_seconds: float = 0.0  # training time so far (validation excluded), s
    global_step: int = 0  # steps so far
    images_seen: int = 0  # training images so far, over all ranks
    last_report: float = -math.inf  # perf_counter of the last progress event
    stop: bool = False  # a time budget or accuracy target was reached
    last_eval: Any = None  # the latest EvalResult
    time_to_target: float | None = None  # training seconds until stop_at_accuracy was reached

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (on this process)."""
        return self.steps_per_epoch * self.config.epochs


def _prepare(dataset: ImageDataset, config: TrainConfig, device: torch.device | str,
             init_model: nn.Module | None, model_config: ModelConfig | None,
             progress: ProgressCallback | None) -> _Run:
    """Check the recipe, build the model and optimizer, and move the training split to the device once."""
    config.validate()
    world = distributed.world_size()
    if device == "auto" and distributed.is_distributed():
        device = distributed.default_device_name()
    device = resolve_device(device)
    say = progress if distributed.is_main_process() else None
    torch.manual_seed(config.seed)
    model, model_config, warning = _resolve_model(dataset, config, init_model, model_config)
    if warning:
        report(say, "train", 0, None, message=warning, metrics={"warning": warning})
    train_images, train_labels = dataset.split("train")
    per_rank = train_images.shape[0] // world
    if per_rank < 2:
        raise DataError(f"dataset {dataset.name} has {train_images.shape[0]} training images: at least "
                        f"{2 * world} are needed to train on {world} process(es)")
    batch_size = min(config.batch_size, per_rank)
    # The whole training split goes to the device once, as uint8, at about the training size.
    train_images = resize_uint8(train_images.to(device), min(dataset.image_size, model_config.image_size))
    on_cuda = device.type == "cuda"
    model.to(device)
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    channels_last = on_cuda and config.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                               momentum=config.momentum)
    steps_per_epoch = per_rank // batch_size
    network: nn.Module = model
    if distributed.is_distributed():
        network = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
    if config.compile and on_cuda:
        network = torch.compile(network)
    rank = distributed.rank()
    return _Run(
        config=config, dataset=dataset, device=device, model=model, model_config=model_config,
        network=network, optimizer=optimizer,
        schedule=make_schedule(optimizer, config.schedule, config.warmup_fraction,
                               steps_per_epoch * config.epochs),
        average=WeightAverage(model, config.ema_decay) if config.ema_decay else None,
        corrupter=(_BatchCorrupter(config.corruption_augment, config.corruption_share, config.seed + rank)
                   if config.corruption_augment else None),
        train_images=train_images, train_labels=train_labels.to(device), batch_size=batch_size,
        steps_per_epoch=steps_per_epoch, say=say,
        augment_generator=torch.Generator(device=device).manual_seed(config.seed * 1000 + rank),
        shuffle_generator=torch.Generator().manual_seed(config.seed), channels_last=channels_last,
        warnings=(warning,) if warning else ())


def _step(run: _Run, batch: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; returns (loss, logits), detached."""
    config = run.config
    if run.corrupter is not None:
        batch = run.corrupter(batch, run.global_step)
    inputs = augment_batch(batch, run.model_config.image_size, generator=run.augment_generator,
                           augmentations=config.augmentations, crop_scale=config.crop_scale,
                           channels_last=run.channels_last, mean=run.model_config.mean,
                           std=run.model_config.std)
    with autocast_for(run.device) if config.amp else torch.autocast(run.device.type, enabled=False):
        logits = run.network(inputs)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.schedule is not None:
        run.schedule.step()
    if run.average is not None:
        run.average.update()
    return loss.detach(), logits.detach()


def _report_step(run: _Run, epoch: int, step: int, loss_sum: torch.Tensor, correct: torch.Tensor,
                 seen: int) -> None:
    """A progress event with the running loss, accuracy, speed and ETA (raises if the loss diverged)."""
    mean_loss = float(loss_sum) / seen
    if not math.isfinite(mean_loss):
        raise ModelError(f"training diverged (loss {mean_loss}) at epoch {epoch}, step {step}: lower the "
                         f"learning rate (lr={run.config.lr})")
    speed = run.images_seen / run.train_seconds if run.train_seconds > 0 else 0.0
    eta = (run.total_steps - run.global_step) * run.train_seconds / run.global_step
    accuracy = float(correct) / seen
    report(run.say, "train", run.global_step, run.total_steps,
           message=f"epoch {epoch}/{run.config.epochs} step {step}/{run.steps_per_epoch} "
                   f"loss {mean_loss:.3f} acc {accuracy:.1%} {speed:,.0f} img/s ETA {eta:.0f} s",
           metrics={"epoch": epoch, "step": step, "global_step": run.global_step, "loss": mean_loss,
                    "accuracy": accuracy, "images_per_s": speed, "eta_s": eta,
                    "lr": run.optimizer.param_groups[0]["lr"]})


def _train_epoch(run: _Run, epoch: int, cancel: CancelToken | None) -> dict[str, Any]:
    """One pass over this process's shard of the training split; returns the epoch's history entry."""
    run.model.train()
    order = torch.randperm(run.train_images.shape[0], generator=run.shuffle_generator)
    order = distributed.shard(order, run.steps_per_epoch, run.batch_size).to(run.device)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    seen = 0
    epoch_start = time.perf_counter()
    trained_before = run.train_seconds
    world = distributed.world_size()
    for step in range(1, run.steps_per_epoch + 1):
        check_cancel(cancel)
        index = order[(step - 1) * run.batch_size: step * run.batch_size]
        labels = run.train_labels[index]
        loss, logits = _step(run, run.train_images[index], labels)
        loss_sum += loss * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
        run.global_step += 1
        run.images_seen += labels.shape[0] * world
        now = time.perf_counter()
        # Wall time since the epoch began (on CUDA the queue makes this approximate until the epoch's end,
        # where it is synchronised).
        run.train_seconds = trained_before + now - epoch_start
        if run.config.max_seconds is not None:
            run.stop = distributed.any_rank(run.train_seconds >= run.config.max_seconds, run.device)
        last_step = step == run.steps_per_epoch or run.stop
        if run.say is not None and (last_step or now - run.last_report >= run.config.log_interval_s):
            run.last_report = now
            _report_step(run, epoch, step, loss_sum, correct, seen)
        if run.stop:
            break
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    run.train_seconds = trained_before + time.perf_counter() - epoch_start
    distributed.average_buffers(run.model)
    totals = distributed.all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                                     torch.tensor(float(seen), device=run.device)]))
    epoch_loss = float(totals[0] / totals[2])
    if not math.isfinite(epoch_loss):
        raise ModelError(f"training diverged (loss {epoch_loss}) in epoch {epoch}: lower the learning rate "
                         f"(lr={run.config.lr})")
    return {"epoch": epoch, "train_loss": epoch_loss, "train_accuracy": float(totals[1] / totals[2]),
            "train_seconds": run.train_seconds, "epoch_seconds": time.perf_counter() - epoch_start,
            "images_per_s": run.images_seen / run.train_seconds if run.train_seconds > 0 else 0.0,
            "val_accuracy": None}


def _validate(run: _Run, epoch: int, entry: dict[str, Any], cancel: CancelToken | None) -> None:
    """Score the weights (or their average) on the val split; stop at the accuracy target."""
    check_cancel(cancel)
    eval_model = run.average.module if run.average is not None else run.model
    val_images, val_labels = run.dataset.split("val")
    result = evaluate(eval_model, run.model_config, val_images, val_labels, run.device,
                      run.dataset.class_names, flip_tta=run.config.flip_tta, cancel=cancel)
    run.last_eval = result
    entry["val_accuracy"] = result.accuracy
    target = run.config.stop_at_accuracy
    if target is not None and run.time_to_target is None and result.accuracy >= target:
        run.time_to_target = run.train_seconds
        run.stop = True
    report(run.say, "train", run.global_step, run.total_steps,
           message=f"epoch {epoch}/{run.config.epochs}: train loss {entry['train_loss']:.3f}, "
                   f"val accuracy {result.accuracy:.1%}",
           metrics={"epoch": epoch, "val_accuracy": result.accuracy, "loss": entry["train_loss"]},
           milestone=True)


def _finish(run: _Run, wall_start: float, init_model: nn.Module | None) -> TrainResult:
    """The trained model in eval mode, with its final metrics."""
    final_model = run.average.module if run.average is not None else run.model
    final_model.eval()
    final = run.last_eval  # the last epoch always ends with a validation of the final weights
    metrics = {
        "val_accuracy": final.accuracy,
        "val_per_class_accuracy": final.per_class_accuracy,
        "val_n": final.n,
        "train_loss": run.history[-1]["train_loss"],
        "train_accuracy": run.history[-1]["train_accuracy"],
        "epochs_run": len(run.history),
        "steps": run.global_step,
        "images_per_s": run.images_seen / run.train_seconds if run.train_seconds > 0 else 0.0,
        "train_seconds": run.train_seconds,
        "time_to_target_s": run.time_to_target,
        "device": describe_device(run.device),
        "world_size": distributed.world_size(),
        "pretrained_loaded": bool(run.model_config.pretrained and not run.warnings and init_model is None),
    }
    seconds = time.perf_counter() - wall_start
    metrics["seconds"] = seconds
    report(run.say, "train", run.total_steps, run.total_steps,
           message=f"done: val accuracy {final.accuracy:.1%} in {seconds:.1f} s", metrics=dict(metrics))
    return TrainResult(model=final_model, model_config=run.model_config, history=run.history, metrics=metrics,
                       seconds=seconds, warnings=run.warnings)


def train_model(
    dataset: ImageDataset,
    config: TrainConfig,
    *,
    device: torch.device | str = "auto",
    init_model: nn.Module | None = None,
    model_config: ModelConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train a classifier on ``dataset``'s train split and validate it on its val split.

    Steps: prepare (model, optimizer, data on the device), then per epoch train and validate (every epoch,
    or only at the end with ``eval_each_epoch=False``), then finish. Inside an initialised process group
    (``torchrun``; see ``zeal_core.distributed``) every rank runs this same call: the model is wrapped in
    DistributedDataParallel and each rank trains on its shard of every epoch; only rank 0 reports progress.

    Args:
        dataset: The data; its ``num_classes`` sets the classifier size.
        config: The recipe.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        init_model: Start from this model (fine-tuning); it is copied, never changed. Pass its
            ``model_config`` too (the input size comes from it).
        model_config: The network's config; default built from ``config`` and the dataset.
        progress: Receives ``train`` events with metrics epoch, step, loss, accuracy, images_per_s, eta_s.
        cancel: Checked before every step; when set, ``Cancelled`` is raised within one step.

    Raises:
        ConfigError: A bad setting. DataError: no training images. ModelError: the model does not fit the
        data, or training diverged. Cancelled: ``cancel`` was set.
    """
    wall_start = time.perf_counter()
    run = _prepare(dataset, config, device, init_model, model_config, progress)
    report(run.say, "train", 0, run.total_steps,
           message=f"training {run.model_config.arch} on {dataset.name} ({run.train_images.shape[0]} images, "
                   f"{run.model_config.image_size} px) on {describe_device(run.device)} x "
                   f"{distributed.world_size()}")
    for epoch in range(1, config.epochs + 1):
        entry = _train_epoch(run, epoch, cancel)
        if config.eval_each_epoch or epoch == config.epochs or run.stop:
            _validate(run, epoch, entry, cancel)
        run.history.append(entry)
        if run.stop:
            break
    return _finish(run, wall_start, init_model)


def train_and_register(
    dataset_name: str,
    config: TrainConfig,
    *,
    device: torch.device | str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    registry: ModelRegistry | None = None,
    parent: str | None = None,
    strategy: str | None = None,
    drift_spec: str | None = None,
    notes: str = "",
    classes: tuple[str, ...] | list[str] | None = None,
    init_checkpoint: str | Path | None = None,
    data_root: Path | str | None = None,
    data_params_file: Path | str | None = None,
) -> ModelCard:
    """Load a dataset by name, train on it, and save the model as a new registry version.

    ``train_and_register("digits", default_config("digits"))`` gives a usable digits model in about a
    minute on 2 CPU cores. Under ``torchrun`` only rank 0 writes; every rank returns the same card.

    Args:
        dataset_name: Passed to ``zeal_core.data.load_dataset`` and stored in the card.
        config: The recipe (stored in the card).
        device: Where to train.
        progress: Receives load and training events.
        cancel: Stops training within one step (nothing is saved then).
        registry: A ``ModelRegistry``; default the one at ``zeal_core.paths.models_dir()``.
        parent: Version this model was derived from (fine-tuning, adaptation).
        strategy: How it was derived, e.g. ``"retrain"``.
        drift_spec: The drift-spec text it was adapted to, if any.
        notes: Free text for the card.
        classes: Train on these classes only (names, in output order); the card records them as
            ``class_names`` and the other classes become unseen ones for this model.
        init_checkpoint: Fine-tune from this checkpoint file, read as ``models import`` reads it
            (``zeal_core.models.importer.init_from_checkpoint``; a classifier of another size is replaced).
        data_root: The data folder the dataset is loaded from (default ``zeal_core.paths.data_dir()``).
        data_params_file: The params file whose ``data:`` section sets the working size (default
            ``ZEAL_PARAMS`` / ``params.yaml``).

    Returns:
        The new version's ``ModelCard``.
    """
    from zeal_core.models.registry import ModelCard, ModelRegistry

    registry = registry if registry is not None else ModelRegistry()
    dataset = load_dataset(dataset_name, progress=progress, root=data_root, params_file=data_params_file)
    if classes is not None:
        dataset = dataset.with_classes(tuple(classes))
    init = None
    if init_checkpoint is not None:
        from zeal_core.models.importer import init_from_checkpoint

        if config.pretrained:
            raise ConfigError("choose either pretrained hub weights or an init checkpoint, not both")
        init = init_from_checkpoint(init_checkpoint, arch=config.arch, num_classes=dataset.num_classes,
                                    image_size=config.image_size)
        notes = "; ".join(part for part in (notes, init.note) if part)
    result = train_model(dataset, config, device=device, progress=progress, cancel=cancel,
                         init_model=init.model if init else None,
                         model_config=init.model_config if init else None)
    card_json = ""
    if distributed.is_main_process():
        metrics = dict(result.metrics)
        metrics["history"] = result.history
        recipe = config.to_dict()
        if init is not None:
            recipe["init"] = init.source
        if result.warnings:
            notes = "; ".join([notes, *result.warnings]) if notes else "; ".join(result.warnings)
        card = registry.save(result.model, model_config=result.model_config, dataset=dataset_name,
                             dataset_fingerprint=dataset.fingerprint, recipe=recipe, metrics=metrics,
                             parent=parent, strategy=strategy, drift_spec=drift_spec, notes=notes,
                             class_names=None if classes is None else dataset.class_names)
        card_json = card.to_json()
    if distributed.is_distributed():
        card_json = distributed.broadcast_text(card_json)
    return ModelCard.from_json(card_json)
