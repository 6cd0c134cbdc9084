"""One fitted reference behind every drift check: the Drift Lab, Your own images, ``check`` on the command
line, the monitor, the pipeline's detector table and the benchmarks.

``get_reference(version, ...)`` (cached) or ``fit_reference`` fits once: the clean held-out reference as
the model sees it, every detector fitted on it, the projection, the per-image drift scores' distances.
``reference.check(sample)`` takes a ``DriftSpec``, real images or embeddings and returns a ``CheckReport``:
per-detector results, one family-wise decision (Bonferroni), the sample's embeddings and projected
coordinates, the most drift-typical images, accuracy when labels are known, timings.
"""

from zeal_core.reference.cache import forget_references, get_reference
from zeal_core.reference.config import PARTS, PROJECTIONS, ReferenceConfig, check_parts
from zeal_core.reference.decision import Decision, bonferroni
from zeal_core.reference.fit import fit_reference
from zeal_core.reference.fitted import FittedReference, ModelSource
from zeal_core.reference.report import CheckReport, TypicalImage

__all__ = [
    "PARTS",
    "PROJECTIONS",
    "CheckReport",
    "Decision",
    "FittedReference",
    "ModelSource",
    "ReferenceConfig",
    "TypicalImage",
    "bonferroni",
    "check_parts",
    "fit_reference",
    "forget_references",
    "get_reference",
]
