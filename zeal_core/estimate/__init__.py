"""Label-free accuracy estimators: how accurate is the model on images whose labels nobody knows?

``list_estimators()``, ``estimator_info(name)``, ``create_estimator(name, **options)``; an estimator has
``fit(reference, bank=None)`` (clean labelled reference Embeddings; a shift bank from
``zeal_core.shifts.build_shift_bank`` when ``needs_bank``) and ``estimate(sample) -> AccuracyEstimate``
(accuracy with a bootstrap interval; the sample's labels are stripped before the estimator sees it).
Temperature scaling (``fit_temperature``, ``expected_calibration_error``) is every estimator's first step.
See docs/estimation.md for the formulas and the benchmark.
"""

# Importing the estimator modules registers them, in the order list_estimators() reports.
# isort: off
from zeal_core.estimate import average_confidence as _average_confidence  # noqa: F401
from zeal_core.estimate import atc as _atc  # noqa: F401
from zeal_core.estimate import doc as _doc  # noqa: F401
from zeal_core.estimate import prior_matched as _prior_matched  # noqa: F401
from zeal_core.estimate import shift_calibrated as _shift_calibrated  # noqa: F401
# isort: on
from zeal_core.estimate.base import (
    AccuracyEstimate,
    AccuracyEstimator,
    EstimatorInfo,
    as_extrapolation,
    create_estimator,
    estimator_info,
    for_family,
    list_estimators,
    register_estimator,
)
from zeal_core.estimate.calibration import Calibration, expected_calibration_error, fit_temperature
from zeal_core.estimate.splits import CorruptionFold, bank_corruptions, leave_one_corruption_out

__all__ = [
    "AccuracyEstimate",
    "AccuracyEstimator",
    "Calibration",
    "CorruptionFold",
    "EstimatorInfo",
    "as_extrapolation",
    "bank_corruptions",
    "create_estimator",
    "estimator_info",
    "expected_calibration_error",
    "fit_temperature",
    "for_family",
    "leave_one_corruption_out",
    "list_estimators",
    "register_estimator",
]
