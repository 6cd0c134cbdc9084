"""A simulated production stream: batches over time under a drift schedule, a detector, and a retrain policy.

Each batch is drawn from the validation split (the reference from the clean images not in it), corrupted by
the schedule's drift spec for that batch, and passed to

- the deployed model: a batch two-sample test (``zeal_core.drift``) of its features (or softmax outputs)
  against the reference, and a streaming change detector fed ``-log10(p)`` of each test;
- the original model, never replaced: the accuracy the stream would have without the policy.

The policy retrains after ``alarms_to_retrain`` batch alarms within the last ``window`` batches, then waits
``cooldown`` batches before it may retrain again. A retrain calls ``zeal_core.retrain.adapt`` (the same
strategies as the Retrain button) inline, inside the simulation: the simulation itself runs as one
``monitor`` job and the job system runs one job at a time, so a nested job would wait for its own parent.
Unlabeled strategies adapt on the images of the alarmed batches (what a deployed system has: recent
unlabeled inputs); after a retrain the detector's reference becomes the new model's view of those same
images, so the new normal is not flagged again and a return to clean data raises a fresh alarm.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.device import resolve_device
from zeal_core.errors import ConfigError
from zeal_core.jsonable import to_jsonable
from zeal_core.models.factory import ModelConfig, extract_features, prepare_batch
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

log = logging.getLogger(__name__)

MAX_BATCHES = 2000  # a schedule longer than this is refused (a typo such as "*10000" would run for hours)
P_VALUE_FLOOR = 1e-6  # p-values are clipped here before -log10, so one batch cannot swamp the stream detector

# "spec*count"; spec may hold one range "a..b" (severity or fraction) that ramps over the segment's batches.
_SEGMENT = re.compile(r"^(?P<spec>[^*]+?)\s*\*\s*(?P<count>\d+)$")
_RANGE = re.compile(r"(?P<low>\d+(?:\.\d+)?)\.\.(?P<high>\d+(?:\.\d+)?)")


# ---------------------------------------------------------------------------------------------------------
# Schedules.


@dataclass(frozen=True)
class Schedule:
    """Which drift spec each batch of the stream gets, as segments of consecutive batches."""

    segments: tuple[tuple[str, int], ...]  # (drift spec text, possibly with one "a..b" ramp; batches)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``"clean*10,gaussian_noise:3*20"``: comma-separated ``spec*batches`` segments.

        A spec may hold one range that ramps linearly over its segment: ``gaussian_noise:1..5*10`` (severity
        1 to 5) or ``contrast:4@0.1..1*10`` (share of affected images 10 % to 100 %). A segment without
        ``*count`` is one batch.

        Raises:
            ConfigError: Empty schedule, bad count, or a spec the corruptions module rejects.
        """
        from zeal_core.corruptions import DriftSpec

        if not isinstance(text, str) or not text.strip():
            raise ConfigError("empty schedule: write e.g. 'clean*10,gaussian_noise:3*20'")
        segments = []
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            match = _SEGMENT.match(part)
            spec, count = (match["spec"].strip(), int(match["count"])) if match else (part, 1)
            if count < 1:
                raise ConfigError(f"schedule segment {part!r}: the batch count must be at least 1")
            for probe in _expand(spec, 2):  # both ends of a ramp must be valid specs
                try:
                    DriftSpec.parse(probe)
                except ConfigError as error:
                    raise ConfigError(f"schedule segment {part!r}: {error}") from None
            segments.append((spec, count))
        if not segments:
            raise ConfigError("empty schedule: write e.g. 'clean*10,gaussian_noise:3*20'")
        schedule = cls(tuple(segments))
        if len(schedule) > MAX_BATCHES:
            raise ConfigError(f"schedule has {len(schedule)} batches; at most {MAX_BATCHES} are allowed")
        return schedule

    @classmethod
    def sudden(cls, spec: str, before: int = 10, after: int = 20) -> Schedule:
        """``before`` clean batches, then ``after`` batches of ``spec`` at once."""
        return cls.parse(f"clean*{before},{spec}*{after}")

    @classmethod
    def gradual(cls, corruption: str, severity: float = 5.0, before: int = 10, ramp: int = 20,
                after: int = 10, by: str = "severity") -> Schedule:
        """Clean, then a ramp (of severity from 0.5 to ``severity``, or of the affected share from 10 % to
        100 %, ``by="fraction"``), then ``after`` batches at full strength."""
        if by == "severity":
            ramp_spec = f"{corruption}:0.5..{severity:g}"
        elif by == "fraction":
            ramp_spec = f"{corruption}:{severity:g}@0.1..1"
        else:
            raise ConfigError(f"gradual drift by {by!r}: use 'severity' or 'fraction'")
        return cls.parse(f"clean*{before},{ramp_spec}*{ramp},{corruption}:{severity:g}*{after}")

    @classmethod
    def recurring(cls, spec: str, clean: int = 10, drifted: int = 10, cycles: int = 3) -> Schedule:
        """``cycles`` times: ``clean`` clean batches, then ``drifted`` batches of ``spec``."""
        if cycles < 1:
            raise ConfigError(f"recurring drift needs at least 1 cycle, got {cycles}")
        return cls.parse(",".join([f"clean*{clean},{spec}*{drifted}"] * cycles))

    @property
    def text(self) -> str:
        """Canonical text form (``Schedule.parse(s.text) == s``)."""
        return ",".join(f"{spec}*{count}" for spec, count in self.segments)

    def __len__(self) -> int:
        return sum(count for _, count in self.segments)

    def batches(self) -> list[str]:
        """The drift spec text of every batch, ramps expanded."""
        out: list[str] = []
        for spec, count in self.segments:
            out.extend(_expand(spec, count))
        return out


def _expand(spec: str, count: int) -> list[str]:
    """``count`` spec texts for a segment; a range ``a..b`` ramps linearly from ``a`` (first) to ``b``."""
    match = _RANGE.search(spec)
    if match is None:
        return [spec] * count
    low, high = float(match["low"]), float(match["high"])
    texts = []
    for index in range(count):
        value = low if count == 1 else low + (high - low) * index / (count - 1)
        texts.append(spec[:match.start()] + f"{round(value, 4):g}" + spec[match.end():])
    return texts


# ---------------------------------------------------------------------------------------------------------
# Configuration and results.


@dataclass(frozen=True)
class MonitorConfig:
    """How the stream is drawn, tested, and acted on."""

    batch_size: int = 64  # images per stream batch
    reference_size: int = 256  # clean validation images the detector's reference is built from
    detector: str = "mmd"  # batch drift detector (zeal_core.drift.list_detectors())
    alpha: float = 0.05  # significance level of the batch test
    stream_detector: str | None = "page_hinkley"  # change detector over -log10(p); None: off
    strategy: str | None = "bn-adapt"  # retrain strategy the policy uses; None: no policy (observe only)
    alarms_to_retrain: int = 3  # k: batch alarms within the window that trigger a retrain
    window: int = 5  # batches the alarm count looks back over
    cooldown: int = 10  # batches after a retrain before the policy may retrain again
    max_retrains: int = 5  # the policy retrains at most this often in one simulation
    strategy_options: dict[str, Any] = field(default_factory=dict)  # options passed to the strategy
    seed: int = 0  # seeds the reference split, batch sampling and corruption noise

    def __post_init__(self) -> None:
        for name in ("batch_size", "reference_size", "alarms_to_retrain", "window"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"monitor {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2 or self.reference_size < 2:
            raise ConfigError("monitor batch_size and reference_size must be at least 2 (two-sample tests)")
        if self.alarms_to_retrain > self.window:
            raise ConfigError(f"alarms_to_retrain ({self.alarms_to_retrain}) cannot exceed window "
                              f"({self.window}): the policy would never fire")
        if self.cooldown < 0 or self.max_retrains < 0:
            raise ConfigError("monitor cooldown and max_retrains must be >= 0")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"monitor alpha must be in (0, 1), got {self.alpha}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MonitorConfig:
        """Build from a dict (e.g. job params); unknown keys raise ``ConfigError``."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown monitor setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class MonitorBatch:
    """What happened at one batch of the stream."""

    index: int  # 0-based batch number
    drift_spec: str  # the drift applied to this batch
    p_value: float  # batch test p-value (deployed model's features vs its reference)
    statistic: float  # batch test statistic
    alarm: bool  # p_value < alpha
    stream_value: float  # -log10(p) fed to the stream detector
    stream_alarm: bool  # the stream detector signalled a change at this batch
    accuracy_without_policy: float  # share correct of the original model (never replaced)
    accuracy_with_policy: float  # share correct of the deployed model (after any retrains)
    active_version: str  # the deployed model version for this batch
    retrained: bool  # the policy retrained right after this batch


@dataclass(frozen=True)
class RetrainEvent:
    """One retrain the policy started."""

    batch_index: int  # the batch after which it ran; the new model serves from the next batch
    strategy: str  # strategy name
    parent: str  # version replaced
    version: str  # new version
    drift_spec: str  # drift of the triggering batch (stored in the new card's lineage)
    adapt_images: int  # unlabeled images it adapted on (0 for labelled strategies)
    seconds: float  # wall time of the retrain, s
    metrics: dict[str, Any]  # the new card's before/after metrics


@dataclass(frozen=True)
class MonitorResult:
    """The whole simulated stream."""

    version: str  # the model the stream started with
    dataset: str  # dataset name
    schedule: str  # schedule text
    config: dict[str, Any]  # MonitorConfig.to_dict()
    batches: tuple[MonitorBatch, ...]  # one per batch
    retrains: tuple[RetrainEvent, ...]  # in order
    seconds: float  # wall time, s

    @property
    def summary(self) -> dict[str, Any]:
        """Mean accuracies (all batches and drifted ones), alarm counts and the first detection delay."""
        drifted = [b for b in self.batches if b.drift_spec not in ("clean", "")]
        onset = next((b.index for b in drifted), None)
        first_alarm = next((b.index for b in self.batches if onset is not None and b.index >= onset
                            and b.alarm), None)

        def mean(values: list[float]) -> float | None:
            return float(np.mean(values)) if values else None

        return {
            "batches": len(self.batches),
            "alarms": sum(b.alarm for b in self.batches),
            "stream_alarms": sum(b.stream_alarm for b in self.batches),
            "false_alarms_clean": sum(b.alarm for b in self.batches if b.drift_spec in ("clean", "")),
            "retrains": len(self.retrains),
            "drift_onset_batch": onset,
            "first_alarm_after_onset": first_alarm,
            "detection_delay_batches": None if first_alarm is None else first_alarm - onset,
            "accuracy_without_policy": mean([b.accuracy_without_policy for b in self.batches]),
            "accuracy_with_policy": mean([b.accuracy_with_policy for b in self.batches]),
            "drifted_accuracy_without_policy": mean([b.accuracy_without_policy for b in drifted]),
            "drifted_accuracy_with_policy": mean([b.accuracy_with_policy for b in drifted]),
            "final_version": self.batches[-1].active_version if self.batches else self.version,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the summary."""
        return {
            "version": self.version, "dataset": self.dataset, "schedule": self.schedule,
            "config": self.config,
            "batches": [asdict(b) for b in self.batches], "retrains": [asdict(r) for r in self.retrains],
            "seconds": self.seconds, "summary": self.summary,
        }


# Signature of a retrain hook: (strategy, parent version, drift spec text, unlabeled images) -> new version.
RetrainHook = Callable[[str, str, str, torch.Tensor], str]


# ---------------------------------------------------------------------------------------------------------
# The simulation.


@torch.no_grad()
def _forward(model: nn.Module, model_config: ModelConfig, images: torch.Tensor,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and softmax outputs (float32, CPU) of a batch of uint8 images."""
    model.eval()
    features, logits = extract_features(model, prepare_batch(images, model_config, device))
    return features.float().cpu(), F.softmax(logits.float(), dim=1).cpu()


def _forward_chunked(model: nn.Module, model_config: ModelConfig, images: torch.Tensor, device: torch.device,
                     chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``_forward`` over a large set in chunks of ``chunk`` images, to bound activation memory."""
    parts = [_forward(model, model_config, images[start:start + chunk], device)
             for start in range(0, images.shape[0], chunk)]
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])


def _detector_input(detector: Any, features: torch.Tensor, probs: torch.Tensor) -> np.ndarray:
    return (probs if detector.input_kind == "probs" else features).numpy()


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

    Returns:
        Per-batch records, retrain events and a summary.

    Raises:
        ConfigError: Bad schedule, detector or policy settings; a reference or batch larger than the split.
        ModelError: The model is missing or does not fit the dataset.
        Cancelled: ``cancel`` was set.
    """
    from zeal_core.corruptions import DriftSpec
    from zeal_core.drift import create_detector, create_stream_detector
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt, load_model_for_dataset, strategy_info

    wall_start = time.perf_counter()
    config = config or MonitorConfig()
    schedule = schedule if isinstance(schedule, Schedule) else Schedule.parse(schedule)
    registry = registry if registry is not None else ModelRegistry()
    device = resolve_device(device)
    if config.strategy is not None:
        strategy_info(config.strategy)  # fail before any work on an unknown name
    start_version, original, card, dataset = load_model_for_dataset(registry, version, dataset_name, device)
    model_config = card.model_config
    val_images, val_labels = dataset.split("val")
    n_val = val_images.shape[0]
    if config.reference_size + config.batch_size > n_val:
        raise ConfigError(f"reference_size {config.reference_size} + batch_size {config.batch_size} exceed "
                          f"the {n_val} validation images of {dataset.name}: make them smaller")
    generator = torch.Generator().manual_seed(config.seed)
    # The original model's view of every clean validation image, computed once. Until the first retrain each
    # batch is tested against a fresh reference drawn from the clean images *not* in that batch: a fixed
    # reference set with batches resampled from one small fixed pool makes the tests share that one split's
    # chance difference (measured on digits: 23 % false alarms on a clean stream at alpha 0.05, against 2.5 %
    # with a fresh split per batch).
    clean_features, clean_probs = _forward_chunked(original, model_config, val_images, device)
    detector = create_detector(config.detector, alpha=config.alpha)
    stream = create_stream_detector(config.stream_detector) if config.stream_detector else None

    def default_retrain(strategy: str, parent: str, spec: str, images: torch.Tensor) -> str:
        unlabeled = not strategy_info(strategy).needs_labels
        new_card = adapt(strategy, parent, dataset.name, spec, device=device, progress=progress,
                         cancel=cancel, registry=registry, options=config.strategy_options or None,
                         adapt_images=images if unlabeled else None,
                         notes=f"monitor policy retrain on {spec} (schedule {schedule.text})")
        return new_card.version

    retrain_hook = run_retrain or default_retrain
    deployed, deployed_version = original, start_version
    specs = schedule.batches()
    parsed: dict[str, Any] = {}
    alarm_batches: list[tuple[int, torch.Tensor]] = []  # (index, images) of recent alarms, for adaptation
    last_retrain: int | None = None
    records: list[MonitorBatch] = []
    events: list[RetrainEvent] = []
    for index, spec_text in enumerate(specs):
        check_cancel(cancel)
        batch_version = deployed_version  # the model that classifies this batch (a retrain serves the next)
        spec = parsed.setdefault(spec_text, DriftSpec.parse(spec_text))
        order = torch.randperm(n_val, generator=generator)
        chosen = order[:config.batch_size]
        images = spec.apply(val_images[chosen], seed=config.seed * 100_003 + index)
        labels = val_labels[chosen]
        if deployed is original:
            reference_index = order[config.batch_size:config.batch_size + config.reference_size]
            detector = create_detector(config.detector, alpha=config.alpha)
            detector.fit(_detector_input(detector, clean_features[reference_index],
                                         clean_probs[reference_index]))

        features, probs = _forward(deployed, model_config, images, device)
        result = detector.test(_detector_input(detector, features, probs))
        accuracy_with = float((probs.argmax(dim=1) == labels).float().mean())
        if deployed is original:
            accuracy_without = accuracy_with
        else:
            _, original_probs = _forward(original, model_config, images, device)
            accuracy_without = float((original_probs.argmax(dim=1) == labels).float().mean())
        stream_value = -math.log10(max(result.p_value, P_VALUE_FLOOR))
        stream_alarm = bool(stream.update(stream_value).alarm) if stream is not None else False

        retrained = False
        if result.is_drift:
            alarm_batches.append((index, images))
        alarm_batches = [(i, x) for i, x in alarm_batches if i > index - config.window]
        cooled = last_retrain is None or index - last_retrain >= config.cooldown
        # Labelled strategies train against the batch's corruption; on a clean batch (a false alarm) there
        # is none to train against, so they skip it.
        trainable = config.strategy is not None and not (strategy_info(config.strategy).needs_labels
                                                         and spec.is_clean)
        if (trainable and len(alarm_batches) >= config.alarms_to_retrain and cooled
                and len(events) < config.max_retrains and index < len(specs) - 1):
            adapt_images = torch.cat([x for _, x in alarm_batches])
            report(progress, "monitor", index + 1, len(specs),
                   f"batch {index + 1}: {len(alarm_batches)} alarms in {config.window} batches -> "
                   f"{config.strategy}")
            retrain_start = time.perf_counter()
            new_version = retrain_hook(config.strategy, deployed_version, spec_text, adapt_images)
            seconds = time.perf_counter() - retrain_start
            deployed, new_card = registry.load(new_version, device=device)
            # The new normal: the detector compares later batches with the new model's view of the images
            # it adapted to, so the persisting drift is not flagged again but a change back is.
            ref_features, ref_probs = _forward(deployed, model_config, adapt_images, device)
            detector = create_detector(config.detector, alpha=config.alpha)
            detector.fit(_detector_input(detector, ref_features, ref_probs))
            if stream is not None:
                stream.reset()
            unlabeled = not strategy_info(config.strategy).needs_labels
            events.append(RetrainEvent(
                batch_index=index, strategy=config.strategy, parent=deployed_version, version=new_version,
                drift_spec=spec_text, adapt_images=int(adapt_images.shape[0]) if unlabeled else 0,
                seconds=seconds, metrics=to_jsonable(new_card.metrics)))
            log.info("monitor: batch %d -> %s retrain %s -> %s (%.1f s)", index, config.strategy,
                     deployed_version, new_version, seconds)
            deployed_version, last_retrain, retrained = new_version, index, True
            alarm_batches = []
        records.append(MonitorBatch(
            index=index, drift_spec=spec.text, p_value=result.p_value, statistic=result.statistic,
            alarm=result.is_drift, stream_value=stream_value, stream_alarm=stream_alarm,
            accuracy_without_policy=accuracy_without, accuracy_with_policy=accuracy_with,
            active_version=batch_version,
            retrained=retrained))
        report(progress, "monitor", index + 1, len(specs),
               f"batch {index + 1}/{len(specs)} {spec.text}: p={result.p_value:.3g}"
               f"{' ALARM' if result.is_drift else ''}, accuracy {accuracy_with:.1%}",
               {"p_value": result.p_value, "accuracy_with_policy": accuracy_with,
                "accuracy_without_policy": accuracy_without})
    return MonitorResult(version=start_version, dataset=dataset.name, schedule=schedule.text,
                         config=config.to_dict(), batches=tuple(records), retrains=tuple(events),
                         seconds=time.perf_counter() - wall_start)
