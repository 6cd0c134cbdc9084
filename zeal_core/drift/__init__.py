"""Drift detectors: a registry of batch two-sample tests and a few streaming change detectors.

Batch: ``list_detectors()``, ``detector_info(name)``, ``create_detector(name, alpha=0.05, **options)``; a
detector has ``input_kind`` ("features" or "probs"), ``fit(reference)`` and ``test(sample) -> DriftResult``
(``zeal_core.reference.FittedReference`` fits them all on one reference and checks samples). Streaming:
``list_stream_detectors()``, ``create_stream_detector(name, **options)`` with ``update(value)``/``reset()``.
See docs/detectors.md for what each statistic and effect size means.
"""

# Importing the detector modules registers them, in the order list_detectors() reports.
# isort: off
from zeal_core.drift import mmd as _mmd  # noqa: F401
from zeal_core.drift import univariate as _univariate  # noqa: F401
from zeal_core.drift import classifier as _classifier  # noqa: F401
from zeal_core.drift import mmd_fuse as _mmd_fuse  # noqa: F401
from zeal_core.drift import mmd_agg as _mmd_agg  # noqa: F401
# isort: on
from zeal_core.drift.base import (
    DetectorInfo,
    DriftDetector,
    DriftResult,
    create_detector,
    detector_info,
    list_detectors,
    parse_detector_names,
    register_detector,
)
from zeal_core.drift.streaming import (
    StreamDetector,
    StreamResult,
    create_stream_detector,
    list_stream_detectors,
    stream_detector_info,
)

__all__ = [
    "DetectorInfo",
    "DriftDetector",
    "DriftResult",
    "StreamDetector",
    "StreamResult",
    "create_detector",
    "create_stream_detector",
    "detector_info",
    "list_detectors",
    "list_stream_detectors",
    "parse_detector_names",
    "register_detector",
    "stream_detector_info",
]
