"""``adapt``: the one entry point that scores a parent, runs a strategy, scores the result and saves it.

The app's Retrain button, the command line, the job queue, the monitor and the history's retrain policy
all call it. The parent is measured on clean validation images and (for a simulated drift) on the same
images under the drift with a fixed seed; the strategy runs; the result is measured the same way and saved
as a new version whose card holds the parent, strategy, drift spec and before/after metrics.

Unlabeled strategies adapt on the drifted *train* split (another seed), never on the validation images they
are scored on, or on the images the caller passes (the monitor's alarmed stream batches, the history's
drifted production batches). For real batches there is no drift spec and no labels: the card then holds the
clean before/after accuracy and where the images came from.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from zeal_core.device import resolve_device
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError, ModelError
from zeal_core.evaluate import evaluate
from zeal_core.jsonable import to_jsonable
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report
from zeal_core.retrain.base import (
    ADAPT_SEED,
    EVAL_SEED,
    AdaptContext,
    StrategyInfo,
    parse_options,
    strategy_info,
    unlabeled_strategies,
)
from zeal_core.retrain.guard import GuardConfig, GuardVerdict, drifted_subset, judge
from zeal_core.sampling import seeded_subset

log = logging.getLogger(__name__)

REFERENCE_IMAGES = 1024  # clean labelled val images a strategy may check itself against (a seeded subset)


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

    A model trained on a class subset (its card names ``class_names``) gets the dataset restricted to those
    classes, relabelled to its outputs.

    Returns:
        (version id, model in eval mode, its card, the dataset in the model's label space).

    Raises:
        ModelError: No such model, or its classes do not fit the dataset.
    """
    from zeal_core.data import load_dataset

    resolved = registry.resolve(version)
    model, card = registry.load(resolved, device=device)
    dataset = load_dataset(dataset_name or card.dataset)
    if card.class_names is not None:
        missing = [name for name in card.class_names if name not in dataset.class_names]
        if missing:
            raise ModelError(f"model {resolved} predicts classes {missing} that dataset {dataset.name} does "
                             f"not have: pick a model trained on {dataset.name}")
        dataset = dataset.with_classes(card.class_names)
    if dataset.num_classes != card.model_config.num_classes:
        raise ModelError(f"model {resolved} has {card.model_config.num_classes} classes but dataset "
                         f"{dataset.name} has {dataset.num_classes}: pick a model trained on {dataset.name}")
    return resolved, model, card, dataset


@dataclass
class _Run:
    """One adaptation in progress: what is adapted, to what, where."""

    name: str  # strategy name
    info: StrategyInfo  # the registered strategy
    options: Any  # its options dataclass, overrides applied
    version: str  # the parent's version id
    model: nn.Module  # the parent, loaded (the strategy changes it in place or returns another)
    card: Any  # the parent's ModelCard
    dataset: Any  # the ImageDataset, in the model's label space
    drift: Any  # the DriftSpec, or None for real batches
    device: torch.device  # where to compute
    progress: ProgressCallback | None  # receives load/evaluate/strategy events
    cancel: CancelToken | None  # checked between steps


def _score(run: _Run, model: nn.Module, stage: str, drifted_val: torch.Tensor | None
           ) -> tuple[Embeddings, float | None]:
    """(``model``'s embeddings of the clean val split, with labels; its drifted val accuracy or None)."""
    from zeal_core.embed import compute_embeddings

    val_images, val_labels = run.dataset.split("val")
    config = run.card.model_config
    check_cancel(run.cancel)
    report(run.progress, "evaluate", 0, 2, f"{stage}: clean validation")
    clean = compute_embeddings(model, config, val_images, run.device, labels=val_labels)
    if drifted_val is None:
        report(run.progress, "evaluate", 2, 2, f"{stage}: clean {clean.accuracy:.1%}")
        return clean, None
    check_cancel(run.cancel)
    report(run.progress, "evaluate", 1, 2, f"{stage}: drifted validation ({run.drift.text})")
    drifted = evaluate(model, config, drifted_val, val_labels, run.device, cancel=run.cancel).accuracy
    report(run.progress, "evaluate", 2, 2, f"{stage}: clean {clean.accuracy:.1%}, drifted {drifted:.1%}")
    return clean, drifted


def _guard(run: _Run, parent: nn.Module, candidate: nn.Module, before: tuple[Embeddings, float | None],
           after: tuple[Embeddings, float | None], images: torch.Tensor | None,
           config: GuardConfig) -> GuardVerdict:
    """The guard's verdict on ``candidate`` (``zeal_core.retrain.guard``); every strategy goes through it."""
    from zeal_core.embed import compute_embeddings

    report(run.progress, "guard", 0, 1, "guard: comparing with the parent")
    drifted = drifted_subset(images, config.max_images)
    if drifted is None and run.drift is not None:  # a labelled strategy: the drift's images, another seed
        drifted = drifted_subset(run.drift.apply(run.dataset.split("train")[0], seed=ADAPT_SEED),
                                 config.max_images)
    config_of_model = run.card.model_config
    embedded = (None, None) if drifted is None else tuple(
        compute_embeddings(model, config_of_model, drifted, run.device) for model in (parent, candidate))
    measured = None if before[1] is None else (before[1], after[1])
    verdict = judge(before[0], after[0], embedded[0], embedded[1], config, measured=measured)
    report(run.progress, "guard", 1, 1, verdict.summary)
    return verdict


def _adaptation_images(run: _Run, adapt_images: torch.Tensor | None) -> torch.Tensor | None:
    """The unlabeled images an unlabeled strategy adapts on (None for the labelled ones).

    Raises:
        ConfigError: Images given to a labelled strategy, or neither images nor a drift to make them.
    """
    if run.info.needs_labels:
        if adapt_images is not None:
            raise ConfigError(f"strategy {run.name!r} trains on labelled data; adaptation images are only "
                              f"for {unlabeled_strategies()}")
        if run.drift is None:
            raise ConfigError(f"strategy {run.name!r} needs a drift spec to train against; real batches "
                              f"without labels can only use {unlabeled_strategies()}")
        return None
    if adapt_images is not None:
        return adapt_images
    if run.drift is None:
        raise ConfigError(f"strategy {run.name!r} needs a drift spec or the images to adapt on")
    train_images, _ = run.dataset.split("train")  # labels deliberately not taken: unlabeled adaptation
    return run.drift.apply(train_images, seed=ADAPT_SEED)


def _metrics(run: _Run, before: tuple[Embeddings, float | None], after: tuple[Embeddings, float | None],
             seconds: float, cpu_seconds: float, details: dict[str, Any], verdict: GuardVerdict
             ) -> dict[str, Any]:
    (clean_before, drifted_before), (clean_after, drifted_after) = before, after
    clean_before, clean_after = float(clean_before.accuracy), float(clean_after.accuracy)
    shift = None if drifted_before is None else recovered_share(clean_before, drifted_before, drifted_after)
    return {
        "accuracy": clean_after,
        "clean_before": clean_before,
        "drifted_before": drifted_before,
        "clean_after": clean_after,
        "drifted_after": drifted_after,
        "recovered_share": shift,
        "clean_drop": clean_before - clean_after,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "device": str(run.device),
        "eval_seed": EVAL_SEED,
        "n_val": int(run.dataset.split("val")[1].numel()),
        "details": to_jsonable(details),
        "guard": verdict.to_dict(),
        "guard_passed": verdict.passed,
    }


def _start(name: str, parent_version: str, dataset_name: str | None, drift_spec: Any, *, device: Any,
           progress: ProgressCallback | None, cancel: CancelToken | None, registry: Any,
           options: dict[str, Any] | None) -> _Run:
    """Check the strategy and options, then load the parent and its dataset."""
    from zeal_core.corruptions import DriftSpec

    info = strategy_info(name)
    strategy_options = parse_options(name, options)
    drift = None if drift_spec is None else (
        drift_spec if isinstance(drift_spec, DriftSpec) else DriftSpec.parse(str(drift_spec)))
    device = resolve_device(device)
    report(progress, "load", 0, 1, f"loading {parent_version}")
    version, model, card, dataset = load_model_for_dataset(registry, parent_version, dataset_name, device)
    return _Run(name=name, info=info, options=strategy_options, version=version, model=model, card=card,
                dataset=dataset, drift=drift, device=device, progress=progress, cancel=cancel)


def _run_strategy(run: _Run, before: tuple[Embeddings, float | None], images: torch.Tensor | None
                  ) -> tuple[nn.Module, dict[str, Any], float, float]:
    """Run the strategy on a copy of the parent (the guard compares with the untouched parent).

    Returns:
        (adapted model, the strategy's details, wall seconds, CPU seconds of all threads).
    """
    val_images, val_labels = run.dataset.split("val")
    positions = seeded_subset(val_images.shape[0], REFERENCE_IMAGES, EVAL_SEED)
    context = AdaptContext(dataset=run.dataset, drift=run.drift, device=run.device, parent_card=run.card,
                           parent_clean_accuracy=float(before[0].accuracy), adapt_images=images,
                           progress=run.progress, cancel=run.cancel,
                           reference=(val_images[positions], val_labels[positions]))
    start, cpu_start = time.perf_counter(), time.process_time()
    model, details = run.info.run(copy.deepcopy(run.model), run.card.model_config, context, run.options)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    # CPU time of all threads: on a shared CPU, closer to the quiet cost than the wall time.
    return model, details, time.perf_counter() - start, time.process_time() - cpu_start


def adapt(
    name: str,
    parent_version: str,
    dataset_name: str | None,
    drift_spec: str | Any | None,
    *,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    registry: Any = None,
    options: dict[str, Any] | None = None,
    adapt_images: torch.Tensor | None = None,
    notes: str = "",
    provenance: dict[str, Any] | None = None,
    guard: GuardConfig | dict[str, Any] | None = None,
) -> Any:
    """Adapt model ``parent_version`` with strategy ``name``; save and return the new card.

    Args:
        name: A strategy from ``list_strategies()``.
        parent_version: The model to start from (``"active"`` and ``"latest"`` work too).
        dataset_name: The dataset; None means the parent's.
        drift_spec: The simulated drift (``DriftSpec`` or its text, e.g. ``"gaussian_noise:3"``), or None for
            real batches (then ``adapt_images`` is required and only unlabeled strategies apply).
        device: Where to compute.
        progress: Receives ``evaluate``/strategy events.
        cancel: Checked between steps; nothing is saved when cancelled.
        registry: The model registry; the default one when None.
        options: Overrides of the strategy's options dataclass fields.
        adapt_images: Unlabeled uint8 images to adapt on instead of the drifted train split (the monitor's
            stream batches, the history's production batches); only for unlabeled strategies.
        notes: Free text stored in the card.
        provenance: Where the adaptation images came from (e.g. the history check ids), stored in the recipe.
        guard: The guard's margins (``GuardConfig`` or its fields); defaults when None. The guard always
            runs: no strategy and no caller can skip it.

    Returns:
        The new ``ModelCard``; its ``metrics`` hold ``clean_before``, ``drifted_before``, ``clean_after``,
        ``drifted_after`` (None without a drift spec), ``recovered_share``, ``clean_drop``, ``seconds``
        (strategy time), details, and the guard's verdict (``guard``, ``guard_passed``): a refused
        version is saved but must not be made active automatically.

    Raises:
        ConfigError: Unknown strategy, option or drift spec; images for a labelled strategy.
        ModelError: The parent is missing or does not fit the dataset.
        Cancelled: ``cancel`` was set.
    """
    from zeal_core.models.registry import ModelRegistry

    registry = registry if registry is not None else ModelRegistry()
    guard_config = guard if isinstance(guard, GuardConfig) else GuardConfig.from_dict(guard)
    run = _start(name, parent_version, dataset_name, drift_spec, device=device, progress=progress,
                 cancel=cancel, registry=registry, options=options)
    images = _adaptation_images(run, adapt_images)
    drifted_val = None if run.drift is None else run.drift.apply(run.dataset.split("val")[0], seed=EVAL_SEED)
    before = _score(run, run.model, "before", drifted_val)
    model, details, seconds, cpu_seconds = _run_strategy(run, before, images)
    check_cancel(cancel)
    after = _score(run, model, "after", drifted_val)
    verdict = _guard(run, run.model, model, before, after, images, guard_config)
    metrics = _metrics(run, before, after, seconds, cpu_seconds, details, verdict)
    drift_text = None if run.drift is None else run.drift.text
    recipe = {"strategy": name, "options": asdict(run.options), "parent": run.version,
              "drift_spec": drift_text, "parent_recipe": run.card.recipe, "guard": asdict(guard_config),
              **({"provenance": provenance} if provenance else {})}
    target = drift_text or f"{0 if images is None else images.shape[0]} real images"
    card = registry.save(
        model, model_config=run.card.model_config, dataset=run.dataset.name,
        dataset_fingerprint=run.dataset.fingerprint,
        recipe=recipe, metrics=metrics, parent=run.version, strategy=name, drift_spec=drift_text,
        notes=notes or f"{name} on {target} from {run.version}", class_names=run.card.class_names,
    )
    log.info("%s: %s -> %s on %s, clean %.4f -> %.4f in %.1f s; %s", name, run.version, card.version, target,
             metrics["clean_before"], metrics["clean_after"], seconds, verdict.summary)
    return card
