"""Drift diagnosis: what kind of drift a sample shows (which corruption and how strong, a label shift, none).

``list_diagnosers()``, ``diagnoser_info(name)``, ``create_diagnoser(name="signature", **options)``; a
diagnoser has ``fit(reference, bank, seed=0)`` (a labelled clean reference and ``zeal_core.shifts`` bank
built from the same images) and ``diagnose(sample, drift_detected=None) -> Diagnosis`` (ranked ``Cause``
objects, a verdict, estimated class proportions). See docs/diagnosis.md for the method and its benchmark.
"""

# Importing the diagnoser modules registers them, in the order list_diagnosers() reports.
from zeal_core.diagnose import signature as _signature  # noqa: F401
from zeal_core.diagnose.base import (
    LABEL_SHIFT,
    NO_DRIFT,
    UNKNOWN,
    VERDICTS,
    Cause,
    Diagnoser,
    DiagnoserInfo,
    Diagnosis,
    create_diagnoser,
    diagnoser_info,
    list_diagnosers,
    register_diagnoser,
)
from zeal_core.diagnose.label_shift import bbse, confusion_given_true
from zeal_core.diagnose.signature import SignatureConfig, SignatureDiagnoser

__all__ = [
    "LABEL_SHIFT",
    "NO_DRIFT",
    "UNKNOWN",
    "VERDICTS",
    "Cause",
    "Diagnoser",
    "DiagnoserInfo",
    "Diagnosis",
    "SignatureConfig",
    "SignatureDiagnoser",
    "bbse",
    "confusion_given_true",
    "create_diagnoser",
    "diagnoser_info",
    "list_diagnosers",
    "register_diagnoser",
]
