"""Streaming change detectors over a stream of per-batch numbers (for the monitoring page).

Each wraps a frouros concept-drift detector (Page-Hinkley, CUSUM, ADWIN). Feed it one number per batch where
larger means "more drift", e.g. ``-log10(p)`` of a batch test, an MMD² value, or the batch error rate.
Page-Hinkley and CUSUM raise an alarm when the cumulative excess over the running mean passes ``threshold``
(frouros' ``lambda_``); ADWIN when two sub-windows of its adaptive window have significantly different means
(values must be >= 0 for ADWIN). After an alarm the detector restarts from scratch (``reset_on_alarm``), so
the next alarm signals a new change rather than the same one again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zeal_core.errors import ConfigError
from zeal_core.plugins import Registry


@dataclass(frozen=True)
class StreamResult:
    """The state after one ``update``."""

    alarm: bool  # a change was detected at this step
    statistic: float  # the detector's running statistic (cumulative sum, or ADWIN window width)
    value: float  # the value just fed in
    step: int  # 0-based index of this value in the stream (counts across resets)
    since_reset: int  # values seen since the last reset or alarm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class StreamDetectorInfo:
    """Name, description and default options of a streaming detector."""

    name: str  # registry name
    description: str  # one line
    defaults: dict[str, Any]  # options and their default values


class StreamDetector:
    """A frouros streaming detector behind a small, stable interface: ``update(value)`` and ``reset()``."""

    def __init__(self, name: str, build: Callable[[], Any], statistic: Callable[[Any], float],
                 options: dict[str, Any], reset_on_alarm: bool = True, nonnegative: bool = False) -> None:
        """Args:
        name: Registry name.
        build: Makes a fresh frouros detector (called at start and on every reset).
        statistic: Reads the running statistic from the frouros detector.
        options: The options it was built with (reported by ``info``).
        reset_on_alarm: Start afresh after each alarm.
        nonnegative: Reject negative values (ADWIN sums them in buckets that must stay >= 0).
        """
        self.name = name
        self.options = dict(options)
        self.reset_on_alarm = reset_on_alarm
        self._build = build
        self._statistic = statistic
        self._nonnegative = nonnegative
        self._detector = build()
        self._step = 0
        self._since_reset = 0

    def update(self, value: float) -> StreamResult:
        """Feed one per-batch value; returns whether this value triggered an alarm.

        Raises:
            ConfigError: The value is NaN/inf, or negative for a detector that needs values >= 0.
        """
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(f"stream detector {self.name!r} got a non-finite value {value!r}")
        if self._nonnegative and number < 0:
            raise ConfigError(
                f"stream detector {self.name!r} needs values >= 0, got {number}: feed e.g. -log10(p) or an "
                f"error rate, or use page_hinkley/cusum"
            )
        with np.errstate(divide="ignore", invalid="ignore"):  # frouros' ADWIN divides by 0 on tiny windows
            self._detector.update(value=number)
        alarm = bool(self._detector.drift)
        result = StreamResult(alarm=alarm, statistic=float(self._statistic(self._detector)), value=number,
                              step=self._step, since_reset=self._since_reset + 1)
        self._step += 1
        self._since_reset += 1
        if alarm and self.reset_on_alarm:
            self._restart()
        return result

    def run(self, values: list[float]) -> list[StreamResult]:
        """``update`` on each value in turn."""
        return [self.update(value) for value in values]

    def _restart(self) -> None:
        self._detector = self._build()
        self._since_reset = 0

    def reset(self) -> None:
        """Forget everything seen so far (the step counter too)."""
        self._restart()
        self._step = 0


def _page_hinkley(threshold: float = 5.0, delta: float = 0.005, forgetting: float = 0.9999,
                  min_instances: int = 5, reset_on_alarm: bool = True) -> StreamDetector:
    from frouros.detectors.concept_drift import PageHinkley, PageHinkleyConfig

    options = {"threshold": threshold, "delta": delta, "forgetting": forgetting,
               "min_instances": min_instances}
    return StreamDetector(
        "page_hinkley",
        lambda: PageHinkley(PageHinkleyConfig(delta=delta, lambda_=threshold, alpha=forgetting,
                                              min_num_instances=min_instances)),
        lambda detector: detector.sum_, options, reset_on_alarm)


def _cusum(threshold: float = 5.0, delta: float = 0.005, min_instances: int = 5,
           reset_on_alarm: bool = True) -> StreamDetector:
    from frouros.detectors.concept_drift import CUSUM, CUSUMConfig

    options = {"threshold": threshold, "delta": delta, "min_instances": min_instances}
    return StreamDetector(
        "cusum",
        lambda: CUSUM(CUSUMConfig(delta=delta, lambda_=threshold, min_num_instances=min_instances)),
        lambda detector: float(detector.sum_), options, reset_on_alarm)


def _adwin(delta: float = 0.002, clock: int = 1, min_window: int = 5, min_instances: int = 10,
           reset_on_alarm: bool = True) -> StreamDetector:
    from frouros.detectors.concept_drift import ADWIN, ADWINConfig

    options = {"delta": delta, "clock": clock, "min_window": min_window, "min_instances": min_instances}
    return StreamDetector(
        "adwin",
        lambda: ADWIN(ADWINConfig(delta=delta, clock=clock, min_window_size=min_window,
                                  min_num_instances=min_instances)),
        lambda detector: float(detector.width), options, reset_on_alarm, nonnegative=True)


# name -> (factory, one-line description)
_STREAM_REGISTRY: Registry[tuple[Callable[..., StreamDetector], str]] = Registry("stream detector")
for _name, _factory, _description in (
    ("page_hinkley", _page_hinkley, "Page-Hinkley: cumulative excess over the running mean (frouros)"),
    ("cusum", _cusum, "CUSUM: one-sided cumulative sum of excess over the running mean (frouros)"),
    ("adwin", _adwin, "ADWIN: adaptive window; alarms when sub-window means differ (frouros; values >= 0)"),
):
    _STREAM_REGISTRY.add(_name, (_factory, _description))


def list_stream_detectors() -> list[str]:
    """Names of the streaming detectors."""
    return _STREAM_REGISTRY.names()


def stream_detector_info(name: str) -> StreamDetectorInfo:
    """Description and default options of a streaming detector."""
    import inspect

    factory, description = _STREAM_REGISTRY.get(name)
    defaults = {key: parameter.default for key, parameter in inspect.signature(factory).parameters.items()}
    return StreamDetectorInfo(name=name, description=description, defaults=defaults)


def create_stream_detector(name: str, **options: Any) -> StreamDetector:
    """Build a streaming detector by name; options as in ``stream_detector_info(name).defaults``.

    Raises:
        ConfigError: Unknown name or option, or an option frouros rejects (e.g. a negative threshold).
    """
    factory, _ = _STREAM_REGISTRY.get(name)
    try:
        return factory(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid option for stream detector {name!r}: {error}") from None
