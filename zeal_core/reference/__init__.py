"""One fitted reference behind every drift check: the Drift Lab, Your own images, ``check`` on the command
line, the monitor, the pipeline's detector table and the benchmarks.

``get_reference(version, ...)`` (cached) or ``fit_reference`` fits once: the clean held-out reference as
the model sees it, every detector fitted on it, the projection, the per-image drift scores' distances.
``reference.check(sample)`` takes a ``DriftSpec``, real images or embeddings and returns a ``CheckReport``:
per-detector results, one family-wise decision (Bonferroni), the sample's embeddings and projected
coordinates, the most drift-typical images, accuracy when labels are known, the label-free accuracy
estimates and the drift diagnosis (``reference.labelfree``; the diagnosis after a one-off warm-up that
builds the shift bank, ``reference.warm_label_free()``), timings. ``sweep_when_ready`` gives a severity
sweep without waiting for it (computed in the background, behind every interactive check).
"""

from zeal_core.reference.background import BackgroundSweeps, background_sweeps, sweep_when_ready
from zeal_core.reference.cache import forget_references, get_reference
from zeal_core.reference.config import PARTS, PROJECTIONS, ReferenceConfig, check_parts
from zeal_core.reference.decision import Decision, bonferroni
from zeal_core.reference.fit import fit_reference
from zeal_core.reference.fitted import FittedReference, ModelSource, SimulatedBatch
from zeal_core.reference.frames import scatter_frame
from zeal_core.reference.grid import DetectorGridConfig, DetectorTable, detector_table
from zeal_core.reference.labelfree import DEFAULT_ESTIMATORS, LabelFreeParts, WarmStatus
from zeal_core.reference.report import CheckReport, TypicalImage, diagnosis_text, estimate_text
from zeal_core.reference.sweep import (
    SEVERITIES,
    WHOLE_SPEC,
    SeveritySweep,
    current_severity,
    severity_sweep,
    sweep_choices,
    swept_spec,
)

__all__ = [
    "DEFAULT_ESTIMATORS",
    "PARTS",
    "PROJECTIONS",
    "SEVERITIES",
    "WHOLE_SPEC",
    "BackgroundSweeps",
    "CheckReport",
    "Decision",
    "DetectorGridConfig",
    "DetectorTable",
    "FittedReference",
    "LabelFreeParts",
    "ModelSource",
    "ReferenceConfig",
    "SeveritySweep",
    "SimulatedBatch",
    "TypicalImage",
    "WarmStatus",
    "background_sweeps",
    "bonferroni",
    "check_parts",
    "current_severity",
    "detector_table",
    "diagnosis_text",
    "estimate_text",
    "fit_reference",
    "forget_references",
    "get_reference",
    "scatter_frame",
    "severity_sweep",
    "sweep_choices",
    "sweep_when_ready",
    "swept_spec",
]
