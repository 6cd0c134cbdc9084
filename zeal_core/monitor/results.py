"""The monitor's settings and what a simulated stream produces (per batch, per retrain, in all)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zeal_core.config import build
from zeal_core.errors import ConfigError
from zeal_core.policy import AlarmRule


@dataclass(frozen=True)
class MonitorConfig:
    """How the stream is drawn, tested, and acted on."""

    batch_size: int = 64  # images per stream batch, drawn from the held-out sample half
    reference_size: int | None = None  # clean held-out images in the reference; None: its whole half
    detector: str = "mmd"  # batch drift detector (zeal_core.drift.list_detectors())
    alpha: float = 0.05  # significance level of the batch test
    stream_detector: str | None = "page_hinkley"  # change detector over -log10(p); None: off
    strategy: str | None = "bn-adapt"  # retrain strategy the policy uses; None: no policy (observe only)
    alarms_to_retrain: int = 3  # k: batch alarms within the window that trigger a retrain
    window: int = 5  # batches the alarm count looks back over
    cooldown: int = 10  # batches after a retrain before the policy may retrain again
    max_retrains: int = 5  # the policy retrains at most this often in one simulation
    strategy_options: dict[str, Any] = field(default_factory=dict)  # options passed to the strategy
    continual: bool = False  # True: the strategy adapts online on every batch instead of after alarms
    guard: dict[str, Any] = field(default_factory=dict)  # the retrain guard's margins (GuardConfig fields)
    seed: int = 0  # seeds the batch draws and corruption noise
    record_history: bool = True  # record each batch's check in the history (origin "monitor", no images)

    def __post_init__(self) -> None:
        if self.batch_size < 2 or (self.reference_size is not None and self.reference_size < 2):
            raise ConfigError("monitor batch_size and reference_size must be at least 2 (two-sample tests)")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"monitor alpha must be in (0, 1), got {self.alpha}")
        if self.continual:
            from zeal_core.retrain import continual_strategies

            if self.strategy not in continual_strategies():
                raise ConfigError(f"monitor continual adaptation needs a strategy that adapts batch by batch "
                                  f"without labels: one of {continual_strategies()}, not {self.strategy!r}")
        self.rule()

    def rule(self) -> AlarmRule:
        """The policy's alarm rule."""
        return AlarmRule(alarms_to_retrain=self.alarms_to_retrain, window=self.window, cooldown=self.cooldown,
                         max_retrains=self.max_retrains)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MonitorConfig:
        """Build from a dict (e.g. job params); unknown keys raise ``ConfigError``."""
        return build(cls, values, "monitor")


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
    estimated_accuracy: float | None = None  # label-free estimate of accuracy_with_policy (no labels used)
    estimate_low: float | None = None  # its interval (the estimator's level, 90 % by default)
    estimate_high: float | None = None
    adapter_reset: bool = False  # continual mode: the adapted model went back to the source after this batch
    adapter_gated: bool = False  # continual mode: the batch looked like clean data, the source served it


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
    deployed: bool = True  # False: the guard refused the version, the parent kept serving
    guard: str | None = None  # the guard's verdict in one line


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
            "retrains_refused": sum(not event.deployed for event in self.retrains),
            "adapter_resets": sum(b.adapter_reset for b in self.batches),
            "adapter_gated": sum(b.adapter_gated for b in self.batches),
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


