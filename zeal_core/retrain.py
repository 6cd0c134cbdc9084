"""Retraining strategies: from a drifted model back to accuracy, each saved as a new version with lineage.

Strategies live in a registry by name (like timm's ``register_model``), each with a one-line description:

- ``bn-adapt``: recompute the BatchNorm running statistics on unlabeled drifted images (Schneider et al.
  2020); no gradients, seconds.
- ``tent``: entropy minimisation on the BatchNorm affine parameters only, using batch statistics
  (Wang et al. 2021); then the running statistics are re-estimated so the saved model works in eval mode.
- ``finetune``: start from the parent, train a few epochs at low learning rate on labelled clean training
  images mixed with corrupted copies across severities; a clean-validation guard keeps the best epoch and
  never accepts one whose clean accuracy falls more than 2 points below the parent's.
- ``retrain``: train from scratch with the same corruption augmentation (same guard, reported).

``adapt`` measures the parent on clean val and on drifted val (the drift applied with a fixed seed), runs the
strategy, measures the result the same way and saves a new registry version whose card holds the parent,
strategy, drift spec and before/after metrics. Unlabeled strategies adapt on the drifted *train* split (with
another seed), never on the validation images they are scored on; see ``docs/retraining.md``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.device import resolve_device
from zeal_core.errors import ConfigError, ModelError
from zeal_core.evaluate import evaluate
from zeal_core.jsonable import to_jsonable
from zeal_core.models.factory import ModelConfig, prepare_batch
from zeal_core.plugins import Registry
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

log = logging.getLogger(__name__)

EVAL_SEED = 0  # seed of the drift applied to the validation images for every before/after score
ADAPT_SEED = 1  # seed of the drift applied to the adaptation (train split) images: other noise, other images
MAX_CLEAN_DROP = 0.02  # share (2 points): the guard never accepts a model this much worse on clean val


# ---------------------------------------------------------------------------------------------------------
# Options: one frozen dataclass per strategy; ``adapt(options={...})`` overrides fields by name.


@dataclass(frozen=True)
class BnAdaptOptions:
    """Settings of ``bn-adapt``."""

    max_images: int = 4096  # adaptation images used at most (a seeded subset of the drifted train split)
    batch_size: int = 128  # images per forward pass; larger batches give steadier statistics
    source_weight: float = 0.0  # share of the parent's statistics kept, in [0, 1] (0: target stats only)


@dataclass(frozen=True)
class TentOptions:
    """Settings of ``tent``."""

    max_images: int = 4096  # adaptation images used at most
    batch_size: int = 128  # images per step; tent normalises with each batch's statistics
    epochs: int = 1  # passes over the adaptation images
    lr: float = 1e-3  # Adam learning rate for the BatchNorm scale and shift


@dataclass(frozen=True)
class FinetuneOptions:
    """Settings of ``finetune`` (labelled; starts from the parent's weights)."""

    epochs: int = 3  # training epochs; a checkpoint is scored after each
    lr_scale: float = 0.1  # learning rate = the dataset recipe's lr x this
    max_severity: float = 5.0  # training corruptions get a random severity in [max/4, max] per batch
    corruption_share: float = 0.5  # share of each training batch corrupted; the rest stays clean
    max_clean_drop: float = MAX_CLEAN_DROP  # share; larger clean losses are never accepted


@dataclass(frozen=True)
class RetrainOptions:
    """Settings of ``retrain`` (labelled; from scratch)."""

    epochs: int | None = None  # training epochs; None: the dataset recipe's
    max_severity: float = 5.0  # training corruptions get a random severity in [max/4, max] per batch
    corruption_share: float = 0.5  # share of each training batch corrupted; the rest stays clean
    max_clean_drop: float = MAX_CLEAN_DROP  # share; a larger clean loss is only reported (no parent to keep)


def _parse_options(cls: type, options: dict[str, Any] | None, strategy: str) -> Any:
    options = dict(options or {})
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"strategy {strategy!r}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)


# ---------------------------------------------------------------------------------------------------------
# The registry.


@dataclass
class AdaptContext:
    """What a strategy gets besides the model: data, drift, device, and the parent's scores."""

    dataset: Any  # the ImageDataset
    drift: Any  # the DriftSpec
    device: torch.device  # where to compute
    parent_card: Any  # the parent's ModelCard
    parent_clean_accuracy: float  # share, clean val, for the guard
    adapt_images: torch.Tensor | None  # unlabeled drifted images (uint8) for the unlabeled strategies
    progress: ProgressCallback | None
    cancel: CancelToken | None


StrategyFunction = Callable[[nn.Module, ModelConfig, AdaptContext, Any], tuple[nn.Module, dict[str, Any]]]


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy."""

    name: str  # registry name, e.g. "bn-adapt"
    description: str  # one line
    needs_labels: bool  # True when it trains on labelled images
    options: type  # the options dataclass
    run: StrategyFunction  # (model, model_config, context, options) -> (model, info)


_STRATEGIES: Registry[StrategyInfo] = Registry("strategy")


def register_strategy(name: str, description: str, *, needs_labels: bool,
                      options: type) -> Callable[[StrategyFunction], StrategyFunction]:
    """Decorator: add ``function(model, model_config, context, options) -> (model, info)`` as ``name``."""

    def decorate(function: StrategyFunction) -> StrategyFunction:
        _STRATEGIES.add(name, StrategyInfo(name, description, needs_labels, options, function))
        return function

    return decorate


def list_strategies() -> list[str]:
    """Names of the registered strategies, cheapest first."""
    return _STRATEGIES.names()


def strategy_info(name: str) -> StrategyInfo:
    """The registered strategy ``name``.

    Raises:
        ConfigError: No such strategy.
    """
    return _STRATEGIES.get(name)


# ---------------------------------------------------------------------------------------------------------
# BatchNorm helpers.


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``, in module order."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def _require_batchnorm(model: nn.Module, strategy: str) -> list[nn.modules.batchnorm._BatchNorm]:
    layers = batchnorm_layers(model)
    if not layers:
        raise ModelError(f"strategy {strategy!r} needs BatchNorm layers, and this model has none: "
                         "use finetune or retrain")
    return layers


def _batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [images[start:start + batch_size] for start in range(0, images.shape[0], batch_size)]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
                            device: torch.device, batch_size: int = 128, source_weight: float = 0.0,
                            progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None) -> int:
    """Replace every BatchNorm layer's running mean and variance by those of ``images`` (in place).

    The running statistics are reset and accumulated as an exact cumulative average (``momentum=None``)
    over forward passes in train mode without gradients; afterwards the layers' momentum is restored and the
    model is left in eval mode.

    Args:
        model: The network (changed in place).
        model_config: Its config (input size).
        images: uint8 unlabeled images of the target domain.
        device: Where to run.
        batch_size: Images per forward pass (a last batch of 1 image is skipped: no variance).
        source_weight: Share of the old statistics kept: new = w * old + (1 - w) * target.
        progress: Receives ``bn-adapt`` events per batch.
        cancel: Checked between batches.

    Returns:
        How many images were used.
    """
    if not 0.0 <= source_weight <= 1.0:
        raise ConfigError(f"source_weight must be in [0, 1], got {source_weight}")
    layers = batchnorm_layers(model)
    saved = [(layer.momentum, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch weighs the same
    model.to(device).train()
    used = 0
    batches = _batches(images, batch_size)
    try:
        for index, batch in enumerate(batches):
            check_cancel(cancel)
            if batch.shape[0] < 2:
                continue
            model(prepare_batch(batch, model_config, device))
            used += batch.shape[0]
            report(progress, "bn-adapt", index + 1, len(batches), f"BatchNorm statistics: {used} images")
    finally:
        for layer, (momentum, old_mean, old_var) in zip(layers, saved, strict=True):
            layer.momentum = momentum
            if used == 0:
                layer.running_mean.copy_(old_mean)
                layer.running_var.copy_(old_var)
            elif source_weight > 0:
                keep = source_weight
                layer.running_mean.mul_(1 - keep).add_(old_mean.to(layer.running_mean), alpha=keep)
                layer.running_var.mul_(1 - keep).add_(old_var.to(layer.running_var), alpha=keep)
        model.eval()
    return used


def _subset(images: torch.Tensor, max_images: int, seed: int) -> torch.Tensor:
    if images.shape[0] <= max_images:
        return images
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)[:max_images]
    return images[order.sort().values]


# ---------------------------------------------------------------------------------------------------------
# The strategies.


@register_strategy("bn-adapt", "recompute BatchNorm statistics on unlabeled drifted images (seconds)",
                   needs_labels=False, options=BnAdaptOptions)
def _bn_adapt(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
              options: BnAdaptOptions) -> tuple[nn.Module, dict[str, Any]]:
    _require_batchnorm(model, "bn-adapt")
    images = _subset(context.adapt_images, options.max_images, ADAPT_SEED)
    used = recompute_bn_statistics(model, model_config, images, context.device, options.batch_size,
                                   options.source_weight, context.progress, context.cancel)
    return model, {"adapt_images": used}


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


@register_strategy("tent", "entropy minimisation on BatchNorm scale/shift with batch statistics (no labels)",
                   needs_labels=False, options=TentOptions)
def _tent(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
          options: TentOptions) -> tuple[nn.Module, dict[str, Any]]:
    layers = _require_batchnorm(model, "tent")
    images = _subset(context.adapt_images, options.max_images, ADAPT_SEED)
    device = context.device
    # Start from target statistics (what tent's batch normalisation sees anyway), then train the affine part.
    recompute_bn_statistics(model, model_config, images, device, options.batch_size,
                            cancel=context.cancel)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    affine = []
    for layer in layers:
        for parameter in (layer.weight, layer.bias):
            if parameter is not None:
                parameter.requires_grad_(True)
                affine.append(parameter)
    optimizer = torch.optim.Adam(affine, lr=options.lr)
    generator = torch.Generator().manual_seed(ADAPT_SEED)
    model.train()  # batch statistics in every forward pass, as tent prescribes
    batch_size = max(2, min(options.batch_size, images.shape[0]))  # few images (the monitor): one batch
    steps, total_steps = 0, options.epochs * max(1, images.shape[0] // batch_size)
    entropies = []
    for _ in range(options.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0] - batch_size + 1, batch_size):
            check_cancel(context.cancel)
            batch = prepare_batch(images[order[start:start + batch_size]], model_config, device)
            loss = _entropy(model(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            entropies.append(float(loss.detach()))
            report(context.progress, "tent", steps, total_steps, f"step {steps}/{total_steps} "
                   f"entropy {entropies[-1]:.3f}", {"entropy": entropies[-1]})
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    # The affine parameters moved, so the statistics of later layers did too: estimate them once more so
    # that the saved model behaves like tent's batch-statistics model in ordinary eval mode.
    used = recompute_bn_statistics(model, model_config, images, device, options.batch_size, 0.0, None,
                                   context.cancel)
    return model, {"adapt_images": used, "steps": steps,
                   "entropy_first": entropies[0] if entropies else None,
                   "entropy_last": entropies[-1] if entropies else None}


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


def _selection_images(images: torch.Tensor, drift: Any, max_severity: float, seed: int) -> torch.Tensor:
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


def _train_config(context: AdaptContext, model_config: ModelConfig, epochs: int, lr_scale: float,
                  max_severity: float, corruption_share: float) -> Any:
    from zeal_core.train import default_config

    base = default_config(context.dataset.name, gpu=context.device.type == "cuda")
    return replace(base, epochs=epochs, lr=base.lr * lr_scale,
                   corruption_augment=corruption_augment_text(context.drift, max_severity),
                   corruption_share=corruption_share, image_size=model_config.image_size,
                   arch=model_config.arch)


def _epoch_progress(progress: ProgressCallback | None, epoch: int, epochs: int) -> ProgressCallback | None:
    """Map one epoch's training events onto the whole run (done = epochs finished, in epochs)."""
    if progress is None:
        return None

    def forward(event: Any) -> None:
        fraction = event.fraction or 0.0
        progress(replace(event, done=epoch + fraction, total=epochs,
                         message=f"epoch {epoch + 1}/{epochs}: {event.message}"))

    return forward


def _checkpoint_scores(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
                       selection_images: torch.Tensor) -> tuple[float, float]:
    val_images, val_labels = context.dataset.split("val")
    clean = evaluate(model, model_config, val_images, val_labels, context.device, cancel=context.cancel)
    robust = evaluate(model, model_config, selection_images, val_labels, context.device,
                      cancel=context.cancel)
    return clean.accuracy, robust.accuracy


@register_strategy("finetune", "train the parent a few epochs on clean + corrupted labelled data, guarded by "
                               "clean validation", needs_labels=True, options=FinetuneOptions)
def _finetune(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
              options: FinetuneOptions) -> tuple[nn.Module, dict[str, Any]]:
    """One epoch at a time from the parent; keep the best epoch that passes the clean guard.

    An epoch's score is the mean of its clean val accuracy and its accuracy on the val images under the
    drift's corruptions at severities 1..max (another seed); the drifted images ``adapt`` reports on are
    never used to choose. An epoch whose clean val accuracy is more than ``max_clean_drop`` below the
    parent's is never accepted; when none passes, the parent's weights are kept unchanged.
    """
    from zeal_core.train import train_model

    if options.epochs < 1:
        raise ConfigError(f"finetune epochs must be at least 1, got {options.epochs}")
    config = _train_config(context, model_config, 1, options.lr_scale, options.max_severity,
                           options.corruption_share)
    val_images, _ = context.dataset.split("val")
    selection = _selection_images(val_images, context.drift, options.max_severity, ADAPT_SEED + 1)
    floor = context.parent_clean_accuracy - options.max_clean_drop
    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    history = []
    current = model
    for epoch in range(options.epochs):
        check_cancel(context.cancel)
        # One short one-cycle per epoch: each call warms up and anneals at the low rate, so every epoch
        # ends at a settled checkpoint worth scoring.
        result = train_model(context.dataset, replace(config, seed=config.seed + epoch),
                             device=context.device, init_model=current, model_config=model_config,
                             progress=_epoch_progress(context.progress, epoch, options.epochs),
                             cancel=context.cancel)
        current = result.model
        clean, robust = _checkpoint_scores(current, model_config, context, selection)
        passed = clean >= floor
        history.append({"epoch": epoch + 1, "clean_val": clean, "corrupted_val_selection": robust,
                        "passes_guard": passed})
        log.info("finetune epoch %d: clean %.4f, corrupted selection %.4f, guard %s", epoch + 1, clean,
                 robust, "ok" if passed else "rejected")
        score = (clean + robust) / 2
        if passed and (best is None or score > best[0]):
            best = (score, copy.deepcopy(current.state_dict()), epoch + 1)
    info: dict[str, Any] = {"epochs": history, "corruption_augment": config.corruption_augment,
                            "clean_floor": floor}
    if best is None:
        info.update(guard_passed=False, guard_rejected_all=True, chosen_epoch=None)
        return model, info  # train_model copies its init model, so these are the parent's weights
    current.load_state_dict(best[1])
    info.update(guard_passed=True, guard_rejected_all=False, chosen_epoch=best[2])
    return current, info


@register_strategy("retrain", "train from scratch with corruption augmentation (labelled, slowest)",
                   needs_labels=True, options=RetrainOptions)
def _retrain(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
             options: RetrainOptions) -> tuple[nn.Module, dict[str, Any]]:
    """The dataset recipe from random weights, with corruption augmentation; the clean guard is reported."""
    from zeal_core.train import default_config, train_model

    epochs = options.epochs or default_config(context.dataset.name, gpu=context.device.type == "cuda").epochs
    config = _train_config(context, model_config, epochs, 1.0, options.max_severity, options.corruption_share)
    fresh_config = replace(model_config, pretrained=False)
    result = train_model(context.dataset, config, device=context.device, model_config=fresh_config,
                         progress=context.progress, cancel=context.cancel)
    val_images, val_labels = context.dataset.split("val")
    clean = evaluate(result.model, model_config, val_images, val_labels, context.device).accuracy
    passed = clean >= context.parent_clean_accuracy - options.max_clean_drop
    if not passed:
        log.warning("retrain: clean val accuracy %.4f is more than %.1f points below the parent's %.4f",
                    clean, options.max_clean_drop * 100, context.parent_clean_accuracy)
    return result.model, {"epochs": epochs, "corruption_augment": config.corruption_augment,
                          "guard_passed": passed, "history": result.history}


# ---------------------------------------------------------------------------------------------------------
# adapt: the one entry point for the app, the command line, jobs and the monitor.


def recovered_share(clean_before: float, drifted_before: float, drifted_after: float) -> float | None:
    """Share of the accuracy the drift took that came back: (after - before) / (clean - before).

    None when the drift took (almost) nothing (less than half a point), where the share means nothing.
    """
    lost = clean_before - drifted_before
    if lost < 0.005:
        return None
    return (drifted_after - drifted_before) / lost


def load_model_for_dataset(registry: Any, version: str, dataset_name: str | None,
                           device: torch.device) -> tuple[str, nn.Module, Any, Any]:
    """Resolve ``version`` (``active``/``latest`` allowed), load it and its dataset, and check they fit.

    Returns:
        (version id, model in eval mode, its card, the dataset: ``dataset_name`` or its training set).

    Raises:
        ModelError: No such model, or its class count differs from the dataset's.
    """
    from zeal_core.data import load_dataset

    resolved = registry.resolve(version)
    model, card = registry.load(resolved, device=device)
    dataset = load_dataset(dataset_name or card.dataset)
    if dataset.num_classes != card.model_config.num_classes:
        raise ModelError(f"model {resolved} has {card.model_config.num_classes} classes but dataset "
                         f"{dataset.name} has {dataset.num_classes}: pick a model trained on {dataset.name}")
    return resolved, model, card, dataset


def adapt(
    name: str,
    parent_version: str,
    dataset_name: str | None,
    drift_spec: str | Any,
    *,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    registry: Any = None,
    options: dict[str, Any] | None = None,
    adapt_images: torch.Tensor | None = None,
    notes: str = "",
) -> Any:
    """Adapt model ``parent_version`` to ``drift_spec`` with strategy ``name``; save and return the new card.

    Args:
        name: A strategy from ``list_strategies()``.
        parent_version: The model to start from (``"active"`` and ``"latest"`` work too).
        dataset_name: The dataset; None means the parent's.
        drift_spec: The drift (``DriftSpec`` or its text, e.g. ``"gaussian_noise:3"``).
        device: Where to compute.
        progress: Receives ``evaluate``/strategy events.
        cancel: Checked between steps; nothing is saved when cancelled.
        registry: The model registry; the default one when None.
        options: Overrides of the strategy's options dataclass fields.
        adapt_images: Unlabeled uint8 images to adapt on instead of the drifted train split (the monitor
            passes its recent stream batches); only for unlabeled strategies.
        notes: Free text stored in the card.

    Returns:
        The new ``ModelCard``; its ``metrics`` hold ``clean_before``, ``drifted_before``, ``clean_after``,
        ``drifted_after``, ``recovered_share``, ``clean_drop``, ``seconds`` (strategy time) and details.

    Raises:
        ConfigError: Unknown strategy, option or drift spec.
        ModelError: The parent is missing or does not fit the dataset.
        Cancelled: ``cancel`` was set.
    """
    from zeal_core.corruptions import DriftSpec
    from zeal_core.models.registry import ModelRegistry

    info = strategy_info(name)
    strategy_options = _parse_options(info.options, options, name)
    registry = registry if registry is not None else ModelRegistry()
    drift = drift_spec if isinstance(drift_spec, DriftSpec) else DriftSpec.parse(str(drift_spec))
    device = resolve_device(device)
    report(progress, "load", 0, 1, f"loading {parent_version}")
    version, model, parent_card, dataset = load_model_for_dataset(registry, parent_version, dataset_name,
                                                                  device)
    model_config = parent_card.model_config
    val_images, val_labels = dataset.split("val")
    drifted_val = drift.apply(val_images, seed=EVAL_SEED)

    def score(current: nn.Module, stage: str) -> tuple[float, float]:
        report(progress, "evaluate", 0, 2, f"{stage}: clean validation")
        clean = evaluate(current, model_config, val_images, val_labels, device, cancel=cancel).accuracy
        report(progress, "evaluate", 1, 2, f"{stage}: drifted validation ({drift.text})")
        drifted = evaluate(current, model_config, drifted_val, val_labels, device, cancel=cancel).accuracy
        report(progress, "evaluate", 2, 2, f"{stage}: clean {clean:.1%}, drifted {drifted:.1%}")
        return clean, drifted

    clean_before, drifted_before = score(model, "before")
    if not info.needs_labels and adapt_images is None:
        train_images, _ = dataset.split("train")  # labels deliberately not taken: unlabeled adaptation
        adapt_images = drift.apply(train_images, seed=ADAPT_SEED)
    elif info.needs_labels and adapt_images is not None:
        raise ConfigError(f"strategy {name!r} trains on labelled data; adapt_images is only for "
                          f"{[s for s in _STRATEGIES if not _STRATEGIES[s].needs_labels]}")
    context = AdaptContext(dataset=dataset, drift=drift, device=device, parent_card=parent_card,
                           parent_clean_accuracy=clean_before, adapt_images=adapt_images, progress=progress,
                           cancel=cancel)
    start, cpu_start = time.perf_counter(), time.process_time()
    model, details = info.run(model, model_config, context, strategy_options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # all threads; on a shared CPU, closer to the quiet cost
    check_cancel(cancel)
    clean_after, drifted_after = score(model, "after")
    metrics = {
        "accuracy": clean_after,
        "clean_before": clean_before,
        "drifted_before": drifted_before,
        "clean_after": clean_after,
        "drifted_after": drifted_after,
        "recovered_share": recovered_share(clean_before, drifted_before, drifted_after),
        "clean_drop": clean_before - clean_after,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "device": str(device),
        "eval_seed": EVAL_SEED,
        "n_val": int(val_labels.numel()),
        "details": to_jsonable(details),
    }
    recipe = {"strategy": name, "options": asdict(strategy_options), "parent": version,
              "drift_spec": drift.text, "parent_recipe": parent_card.recipe}
    card = registry.save(
        model, model_config=model_config, dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        recipe=recipe, metrics=metrics, parent=version, strategy=name, drift_spec=drift.text,
        notes=notes or f"{name} on {drift.text} from {version}",
    )
    log.info("%s: %s -> %s, drifted %.4f -> %.4f, clean %.4f -> %.4f in %.1f s", name, version, card.version,
             drifted_before, drifted_after, clean_before, clean_after, seconds)
    return card
