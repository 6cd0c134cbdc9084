"""Running several registered detectors on a reference and a sample ``Embeddings`` in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zeal_core.drift.base import DriftResult, create_detector, list_detectors
from zeal_core.errors import ConfigError

if TYPE_CHECKING:
    from zeal_core.embed import Embeddings


def detector_input(embeddings: Embeddings, input_kind: str, what: str) -> np.ndarray:
    """The array a detector of ``input_kind`` reads: ``features`` or ``probs`` of ``embeddings``."""
    array = getattr(embeddings, input_kind, None)
    if array is None:
        raise ConfigError(f"{what} embeddings have no {input_kind!r}: compute them with compute_embeddings")
    return array


def run_detectors(reference: Embeddings, sample: Embeddings, names: Sequence[str] | None = None,
                  alpha: float = 0.05, options: dict[str, dict[str, Any]] | None = None) -> list[DriftResult]:
    """Fit each detector on ``reference`` and test ``sample``, picking features or probs by input kind.

    Args:
        reference: Embeddings of the reference (clean) set.
        sample: Embeddings of the possibly drifted sample.
        names: Detector names (default: all registered).
        alpha: Significance level for every detector.
        options: Per-detector options, e.g. ``{"mmd": {"num_permutations": 500}}``.

    Returns:
        One ``DriftResult`` per name, in order. For ``c2st`` the details also hold ``most_drifted_indices``:
        the sample's most drift-typical items as indices into the split (``sample.indices``).
    """
    options = options or {}
    unknown = set(options) - set(list_detectors())
    if unknown:
        raise ConfigError(f"options given for unknown detector(s) {sorted(unknown)}: "
                          f"choose from {', '.join(list_detectors())}")
    results = []
    for name in list(names) if names is not None else list_detectors():
        detector = create_detector(name, alpha=alpha, **options.get(name, {}))
        detector.fit(detector_input(reference, detector.input_kind, "reference"))
        result = detector.test(detector_input(sample, detector.input_kind, "sample"))
        if "most_drifted" in result.details and getattr(sample, "indices", None) is not None:
            positions = np.asarray(result.details["most_drifted"], dtype=np.int64)
            result.details["most_drifted_indices"] = np.asarray(sample.indices)[positions].tolist()
        results.append(result)
    return results
