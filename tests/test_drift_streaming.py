"""Streaming change detectors (frouros Page-Hinkley, CUSUM, ADWIN) over per-batch values."""

from __future__ import annotations

import numpy as np
import pytest

from zeal_core.drift import create_stream_detector, list_stream_detectors, stream_detector_info
from zeal_core.errors import ConfigError


def stream(seed: int, change_at: int | None, length: int = 120) -> np.ndarray:
    """Per-batch values near 0.2 (e.g. -log10 p of clean batches), jumping to ~1.5 at ``change_at``."""
    values = np.random.default_rng(seed).normal(0.2, 0.05, length).clip(min=0.0)
    if change_at is not None:
        values[change_at:] += 1.3
    return values


def test_registry() -> None:
    assert {"page_hinkley", "cusum", "adwin"} <= set(list_stream_detectors())
    for name in list_stream_detectors():
        info = stream_detector_info(name)
        assert info.name == name and info.description and info.defaults
    with pytest.raises(ConfigError, match="page_hinkley"):
        create_stream_detector("nope")
    with pytest.raises(ConfigError, match="invalid option"):
        create_stream_detector("cusum", no_such_option=3)


@pytest.mark.parametrize("name", list_stream_detectors())
def test_paired_stationary_and_change(name: str) -> None:
    quiet = create_stream_detector(name).run(stream(0, None).tolist())
    assert not any(result.alarm for result in quiet), f"{name} alarmed on a stationary stream"
    detector = create_stream_detector(name)
    results = detector.run(stream(0, 80).tolist())
    alarms = [result.step for result in results if result.alarm]
    # ADWIN only cuts its window at bucket boundaries, so it reacts later than the cumulative-sum tests.
    delay = 40 if name == "adwin" else 10
    assert alarms and 80 <= alarms[0] <= 80 + delay, f"{name} alarms at {alarms}"
    assert [result.step for result in results] == list(range(120))
    first = results[alarms[0]]
    assert first.since_reset >= 1 and np.isfinite(first.statistic)


@pytest.mark.parametrize("name", list_stream_detectors())
def test_reset_forgets_history(name: str) -> None:
    detector = create_stream_detector(name, reset_on_alarm=False)
    detector.run(stream(1, 50).tolist())
    detector.reset()
    after = detector.run(stream(2, None, length=60).tolist())
    assert after[0].step == 0 and after[0].since_reset == 1
    assert not any(result.alarm for result in after)


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="non-finite"):
        create_stream_detector("cusum").update(float("nan"))
    with pytest.raises(ConfigError, match=">= 0"):
        create_stream_detector("adwin").update(-0.5)
    with pytest.raises(ConfigError, match="invalid option"):
        create_stream_detector("page_hinkley", threshold=-1.0)
