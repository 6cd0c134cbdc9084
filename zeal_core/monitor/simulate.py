"""A simulated production stream: batches over time under a drift schedule, a detector, and a retrain policy.

Each batch is drawn from the held-out sample half of the validation split by the schedule's drift spec for
that batch (its class mix, then its corruptions) — the same draw as every simulated check — and passed to

- the deployed model: ``FittedReference.check`` of its embeddings against the reference (the lab's check
  profile, from ``zeal_core.service``), with the monitor's one detector, and a streaming change detector fed
  ``-log10(p)`` of each test;
- the original model, never replaced: the accuracy the stream would have without the policy.

The policy (``zeal_core.policy.AlarmRule``) retrains after ``alarms_to_retrain`` batch alarms within the last
``window`` batches, then waits ``cooldown`` batches. A retrain calls ``zeal_core.retrain.adapt`` inline (the
simulation itself runs as one ``monitor`` job, and the job system runs one job at a time, so a nested job
would wait for its own parent). Unlabeled strategies adapt on the images of the alarmed batches (what a
deployed system has: recent unlabeled inputs). After a retrain the reference follows the deployed model: it
becomes the new model's view of those same images, so a persisting drift is no longer flagged (the new
normal) while a return to clean data raises a fresh alarm. Each batch's label-free estimate is calibrated
on the deployed model's view of the clean labelled reference; after an unlabeled adaptation that view uses
the reference's own BatchNorm statistics, and the interval also spans the adapted statistics' calibration
(``_Stream.calibration_views``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.device import resolve_device
from zeal_core.embed import Embeddings, compute_embeddings
from zeal_core.jsonable import to_jsonable
from zeal_core.monitor.adaptation import serve, start_continual
from zeal_core.monitor.results import MonitorBatch, MonitorConfig, MonitorResult, RetrainEvent
from zeal_core.monitor.schedule import Schedule
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report
from zeal_core.reference import FittedReference, LabelFreeParts

log = logging.getLogger(__name__)

P_VALUE_FLOOR = 1e-6  # p-values are clipped here before -log10, so one batch cannot swamp the stream detector
_BATCH_SEED_STRIDE = 100_003  # batch i of a stream draws and corrupts with seed * stride + i

# Signature of a retrain hook: (strategy, parent version, drift spec text, unlabeled images) -> new version.
RetrainHook = Callable[[str, str, str, torch.Tensor], str]


@dataclass
class _Stream:
    """The state of one simulation while it runs; ``step`` handles one batch."""

    config: MonitorConfig  # batch size, detector, policy
    schedule: Schedule  # the drift of every batch
    reference: FittedReference  # the original model's reference (draws the batches)
    registry: Any  # the model registry retrains save into
    device: torch.device  # where the models run
    retrain: RetrainHook  # runs one policy retrain, returns the new version
    progress: ProgressCallback | None  # one event per batch
    history: Any  # HistoryStore the batch checks are recorded in, or None
    deployed: torch.nn.Module = field(init=False)  # the model serving now
    deployed_version: str = field(init=False)  # its version
    active: FittedReference = field(init=False)  # what batches are tested against now
    stream: Any = field(init=False)  # the streaming change detector, or None
    estimating: LabelFreeParts = field(init=False)  # label-free estimates of the deployed model's accuracy
    continual: Any = field(init=False)  # ContinualAdapter in continual mode (monitor/adaptation.py), or None
    # after an unlabeled adaptation: estimates calibrated on the adapted statistics' view of the reference,
    # whose intervals the shown ones are widened to (see ``calibration_views``); None otherwise
    bracketing: LabelFreeParts | None = None
    alarms: list[int] = field(default_factory=list)  # batch indices that raised an alarm
    alarm_images: dict[int, torch.Tensor] = field(default_factory=dict)  # images of recent alarms
    last_retrain: int | None = None  # batch index of the last retrain
    records: list[MonitorBatch] = field(default_factory=list)  # one per batch so far
    events: list[RetrainEvent] = field(default_factory=list)  # the retrains so far

    def __post_init__(self) -> None:
        from zeal_core.drift import create_stream_detector

        self.deployed, self.deployed_version = self.reference.source.model, self.reference.version
        self.active = self.reference
        self.estimating = self.reference.label_free
        name = self.config.stream_detector
        self.stream = create_stream_detector(name) if name else None
        self.continual = start_continual(self.config, self.reference, self.device)

    @property
    def original(self) -> torch.nn.Module:
        """The model the stream started with (never replaced)."""
        return self.reference.source.model

    def embed(self, model: torch.nn.Module, images: torch.Tensor, labels: Any) -> Embeddings:
        """The batch as ``model`` sees it."""
        return compute_embeddings(model, self.reference.source.card.model_config, images, self.device,
                                  labels=labels)

    def step(self, index: int, spec: DriftSpec, total: int) -> None:
        """Draw, test and score batch ``index``; let the policy act; record it."""
        seed = self.config.seed * _BATCH_SEED_STRIDE + index
        batch = self.reference.simulate_batch(spec, self.config.batch_size, seed)
        served_by = self.deployed_version  # a retrain after this batch serves from the next one
        seen = self.embed(self.deployed, batch.images, batch.labels)
        checked = self.active.check(replace(seen, spec=spec.text), parts=("detectors",),
                                    detectors=(self.config.detector,),
                                    source=f"stream batch {index + 1}/{total}: {spec.text}")
        estimates = self.estimating.estimates(seen)[0]
        if self.bracketing is not None:
            estimates = bracket_estimates(estimates, self.bracketing.estimates(seen)[0])
        checked = replace(checked, estimates=estimates)
        result = checked.results[0]
        accuracy_with = float(seen.accuracy)
        accuracy_without = accuracy_with if self.deployed is self.original else \
            float(self.embed(self.original, batch.images, batch.labels).accuracy)
        served = None if self.continual is None else serve(self.continual, batch.images, batch.labels)
        if served is not None:  # continual mode: the adapted predictions are served
            accuracy_with = served.accuracy
        stream_value = -math.log10(max(result.p_value, P_VALUE_FLOOR))
        stream_alarm = bool(self.stream.update(stream_value).alarm) if self.stream is not None else False
        if result.is_drift:
            self.alarms.append(index)
            self.alarm_images[index] = batch.images
        retrained = self.policy_decision(index, spec, total)
        if retrained:
            self.deploy(index, spec, self.take_alarm_images(index))
        self.records.append(MonitorBatch(
            index=index, drift_spec=spec.text, p_value=result.p_value, statistic=result.statistic,
            alarm=result.is_drift, stream_value=stream_value, stream_alarm=stream_alarm,
            accuracy_without_policy=accuracy_without, accuracy_with_policy=accuracy_with,
            active_version=served_by, retrained=retrained, adapter_reset=bool(served and served.reset),
            adapter_gated=bool(served and served.gated),
            **_estimate_fields(None if served else checked.estimated_accuracy)))
        if self.history is not None:
            self.history.record(checked, origin="monitor")
        report(self.progress, "monitor", index + 1, total,
               f"batch {index + 1}/{total} {spec.text}: p={result.p_value:.3g}"
               f"{' ALARM' if result.is_drift else ''}, accuracy {accuracy_with:.1%}",
               {"p_value": result.p_value, "accuracy_with_policy": accuracy_with,
                "accuracy_without_policy": accuracy_without})

    def policy_decision(self, index: int, spec: DriftSpec, total: int) -> bool:
        """Whether the policy retrains after batch ``index``.

        Labelled strategies train against the batch's corruption; on a clean batch (a false alarm) there is
        none to train against, so they skip it. The last batch never triggers (nothing would be served).
        """
        from zeal_core.retrain import strategy_info

        strategy = self.config.strategy
        if strategy is None or index >= total - 1 or self.continual is not None:
            return False
        if strategy_info(strategy).needs_labels and not spec.steps:
            return False
        return self.config.rule().fires(self.alarms, index, self.last_retrain, fired=len(self.events))

    def take_alarm_images(self, index: int) -> torch.Tensor:
        """The images of the alarms that triggered the retrain (the policy's recent window)."""
        recent = self.config.rule().recent_alarms(self.alarms, index, self.last_retrain)
        images = torch.cat([self.alarm_images[alarm] for alarm in recent])
        self.alarm_images.clear()
        return images

    def deploy(self, index: int, spec: DriftSpec, images: torch.Tensor) -> None:
        """Retrain, serve the new model from the next batch (unless the guard refused it), and let the
        reference follow it."""
        from zeal_core.retrain import strategy_info, verdict_of

        strategy = self.config.strategy
        report(self.progress, "monitor", index + 1, None, f"batch {index + 1}: "
               f"{self.config.alarms_to_retrain} alarms in {self.config.window} batches -> {strategy}")
        start = time.perf_counter()
        new_version = self.retrain(strategy, self.deployed_version, spec.text, images)
        seconds = time.perf_counter() - start
        model, card = self.registry.load(new_version, device=self.device)
        verdict = verdict_of(card)
        if verdict is not None and not verdict.passed:  # the guard refused it: keep serving the parent
            self.events.append(RetrainEvent(
                batch_index=index, strategy=strategy, parent=self.deployed_version, version=new_version,
                drift_spec=spec.text, adapt_images=0 if strategy_info(strategy).needs_labels else len(images),
                seconds=seconds, metrics=to_jsonable(card.metrics), deployed=False, guard=verdict.summary))
            self.last_retrain = index
            return
        # The new normal: later batches are compared with the new model's view of the images it adapted
        # to, so the persisting drift is not flagged again but a change back is.
        self.active = FittedReference.from_embeddings(self.embed(model, images, None), self.active.config,
                                                      dataset_name=self.reference.dataset_name,
                                                      version=new_version)
        matched, adapted = self.calibration_views(model, strategy)
        self.estimating = LabelFreeParts(matched, None, None, seed=self.config.seed)
        self.bracketing = None if adapted is None else \
            LabelFreeParts(adapted, None, None, seed=self.config.seed)
        if self.stream is not None:
            self.stream.reset()
        unlabeled = not strategy_info(strategy).needs_labels
        self.events.append(RetrainEvent(
            batch_index=index, strategy=strategy, parent=self.deployed_version, version=new_version,
            drift_spec=spec.text, adapt_images=int(images.shape[0]) if unlabeled else 0, seconds=seconds,
            metrics=to_jsonable(card.metrics), guard=verdict.summary if verdict else None))
        log.info("monitor: batch %d -> %s retrain %s -> %s (%.1f s)", index, strategy, self.deployed_version,
                 new_version, seconds)
        self.deployed, self.deployed_version, self.last_retrain = model, new_version, index


    def calibration_views(self, model: torch.nn.Module,
                          strategy: str) -> tuple[Embeddings, Embeddings | None]:
        """The new model's views of the clean labelled reference that its label-free estimates are
        calibrated on (they need labels; the drifted batches have none): the one shown, and for an
        unlabeled adaptation a second one whose intervals widen the shown ones (else None).

        An unlabeled strategy (bn-adapt, tent) normalises with the drifted batches' own BatchNorm statistics,
        so the deployed model sees each batch with statistics matched to it. Seen through those adapted
        statistics the clean reference is out of its domain (the digits model adapted to gaussian_noise:5:
        88 % on clean images against 95-98 % on the noisy batches), and estimates calibrated there read
        5-20 points low. The shown view is the reference as the batches are seen: by a copy of the model
        whose statistics are recomputed on the reference images themselves (the deployed model keeps its
        adapted ones). Neither view is the new domain with labels (an adaptation that failed leaves the
        model worse than the matched view suggests), so the estimate is an extrapolation whose interval
        spans both calibrations.
        """
        from zeal_core.retrain import strategy_info
        from zeal_core.retrain.batchnorm import batchnorm_layers, recompute_bn_statistics

        clean = self.reference.reference
        images = self.reference.source.split_images[torch.from_numpy(clean.indices.copy())].to(self.device)
        adapted = self.embed(model, images, clean.labels)
        if strategy_info(strategy).needs_labels or not batchnorm_layers(model):
            return adapted, None
        matched = copy.deepcopy(model)
        recompute_bn_statistics(matched, self.reference.source.card.model_config, images, self.device)
        return self.embed(matched, images, clean.labels), adapted


def bracket_estimates(shown: tuple[Any, ...], other: tuple[Any, ...]) -> tuple[Any, ...]:
    """``shown`` with each interval widened to hold the same estimator's ``other`` interval too, and
    flagged as an extrapolation (two calibrations, neither on labelled data of the batch's domain)."""
    by_name = {estimate.estimator: estimate for estimate in other}
    widened = []
    for estimate in shown:
        twin = by_name.get(estimate.estimator)
        if twin is None:
            widened.append(estimate)
            continue
        details = {**(estimate.details or {}), "bracketed_by": [twin.accuracy, twin.low, twin.high]}
        widened.append(replace(estimate, low=min(estimate.low, twin.low), high=max(estimate.high, twin.high),
                               extrapolation=True, details=details))
    return tuple(widened)

def simulate(
    version: str,
    dataset_name: str | None,
    schedule: Schedule | str,
    config: MonitorConfig | None = None,
    *,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    run_retrain: RetrainHook | None = None,
    registry: Any = None,
    history: Any = None,
) -> MonitorResult:
    """Run a simulated stream through a model, a detector and the retrain policy.

    Args:
        version: The deployed model at the start (``"active"``/``"latest"`` work too).
        dataset_name: The dataset; None means the model's.
        schedule: A ``Schedule`` or its text.
        config: Batch size, detector, policy; defaults when None.
        device: Where to compute.
        progress: Receives one ``monitor`` event per batch (and the retrain's events).
        cancel: Checked between batches.
        run_retrain: Called for each policy retrain; default: ``zeal_core.retrain.adapt`` inline with the
            config's strategy, unlabeled strategies adapting on the alarmed batches' images.
        registry: The model registry; the default one when None.
        history: The ``HistoryStore`` the batch checks are recorded in; the default one when None and
            ``config.record_history``.

    Returns:
        Per-batch records, retrain events and a summary.

    Raises:
        ConfigError: Bad schedule, detector or policy settings; a reference or batch larger than its half.
        ModelError: The model is missing or does not fit the dataset.
        Cancelled: ``cancel`` was set.
    """
    from zeal_core.history import HistoryStore
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import strategy_info

    wall_start = time.perf_counter()
    config = config or MonitorConfig()
    schedule = schedule if isinstance(schedule, Schedule) else Schedule.parse(schedule)
    registry = registry if registry is not None else ModelRegistry()
    device = resolve_device(device)
    if config.strategy is not None:
        strategy_info(config.strategy)  # fail before any work on an unknown name
    reference = _check_service(config, registry, device, progress, history).reference(version, dataset_name)
    if history is None and config.record_history:
        history = HistoryStore()
    retrain = run_retrain or _default_retrain(reference, config, schedule, registry, device, progress, cancel)
    stream = _Stream(config=config, schedule=schedule, reference=reference, registry=registry, device=device,
                     retrain=retrain, progress=progress, history=history)
    specs = [DriftSpec.parse(text) for text in schedule.batches()]
    for index, spec in enumerate(specs):
        check_cancel(cancel)
        stream.step(index, spec, len(specs))
    return MonitorResult(version=reference.version, dataset=reference.dataset_name, schedule=schedule.text,
                         config=config.to_dict(), batches=tuple(stream.records),
                         retrains=tuple(stream.events), seconds=time.perf_counter() - wall_start)


def _check_service(config: MonitorConfig, registry: Any, device: torch.device,
                   progress: ProgressCallback | None, history: Any) -> Any:
    """The lab's check service (its profile: reference, permutations), with the monitor's own settings as
    explicit overrides; the monitor's detector is added to the profile's when it is not one of them."""
    from zeal_core.service import CheckService

    overrides: dict[str, Any] = {"reference_n": config.reference_size, "seed": config.seed,
                                 "alpha": config.alpha}
    service = CheckService(overrides=overrides, registry=registry, history=history, device=device,
                           progress=progress)
    detectors = service.profile.detectors
    if detectors and config.detector not in detectors:
        overrides["detectors"] = (*detectors, config.detector)
        service = CheckService(overrides=overrides, registry=registry, history=history, device=device,
                               progress=progress)
    return service


def _default_retrain(reference: FittedReference, config: MonitorConfig, schedule: Schedule, registry: Any,
                     device: torch.device, progress: ProgressCallback | None,
                     cancel: CancelToken | None) -> RetrainHook:
    """The policy's retrain: ``adapt`` inline; unlabeled strategies adapt on the alarmed batches."""
    from zeal_core.retrain import adapt, strategy_info

    def retrain(strategy: str, parent: str, spec: str, images: torch.Tensor) -> str:
        unlabeled = not strategy_info(strategy).needs_labels
        card = adapt(strategy, parent, reference.dataset_name, spec, device=device, progress=progress,
                     cancel=cancel, registry=registry, options=config.strategy_options or None,
                     adapt_images=images if unlabeled else None,
                     notes=f"monitor policy retrain on {spec} (schedule {schedule.text})",
                     provenance={"origin": "monitor", "schedule": schedule.text}, guard=config.guard or None)
        return card.version

    return retrain


def _estimate_fields(estimate: Any) -> dict[str, float | None]:
    """A batch's label-free estimate (of the deployed model's accuracy) as ``MonitorBatch`` fields."""
    if estimate is None:
        return {}
    return {"estimated_accuracy": estimate.accuracy, "estimate_low": estimate.low,
            "estimate_high": estimate.high}
