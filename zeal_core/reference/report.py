"""What one check says: the ``CheckReport`` every page, command, monitor, stage and benchmark reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from zeal_core.drift.base import DriftResult
from zeal_core.embed import Embeddings
from zeal_core.jsonable import to_jsonable
from zeal_core.reference.decision import Decision

# Per-detector details too long for a summary (per-dimension p-values, rankings).
_LONG_DETAILS = ("p_values", "most_drifted", "most_drifted_scores", "per_kernel")


def now_text() -> str:
    """The current time as ISO 8601 UTC (seconds), the time stamp of a report."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def estimate_text(estimate: Any) -> str:
    """One line for an ``AccuracyEstimate``: "93.1 % (90 % interval 88.0-96.2 %, pm-atc)"."""
    if estimate is None:
        return "no estimate"
    return (f"{estimate.accuracy:.1%} ({estimate.level:.0%} interval {estimate.low:.1%}-{estimate.high:.1%}, "
            f"{estimate.estimator})")


def diagnosis_text(diagnosis: Any, class_names: tuple[str, ...] = ()) -> str:
    """One line for a ``Diagnosis``: its verdict and top cause, e.g. "covariate shift: fog, severity 2.6
    (score 0.93)"; "label shift" names the (at most two) classes whose share grew most."""
    if diagnosis is None:
        return "no diagnosis"
    best = diagnosis.best
    if diagnosis.verdict == "no drift":
        return "no drift"
    if diagnosis.verdict == "label shift":
        estimated = diagnosis.estimated_class_proportions or {}
        before = diagnosis.reference_class_proportions or {}
        grown = sorted(estimated, key=lambda key: before.get(key, 0.0) - estimated[key])[:2]
        def name(key: Any) -> str:
            index = int(key)
            return class_names[index] if 0 <= index < len(class_names) else f"class {index}"

        shares = ", ".join(f"{name(key)} {before.get(key, 0.0):.0%} -> {estimated[key]:.0%}" for key in grown)
        return f"label shift ({shares})" if shares else "label shift"
    if diagnosis.verdict == "unknown shift":
        nearest = next((cause for cause in diagnosis.causes if cause.kind != "unknown"), None)
        return "unknown shift" + (f" (nearest known: {nearest.kind})" if nearest is not None else "")
    severity = "" if best.severity is None else f", severity {best.severity:.1f}"
    share = best.details.get("fraction") if best.details else None
    affected = f", on ~{share:.0%} of the images" if share is not None and share < 1 else ""
    return f"{diagnosis.verdict}: {best.kind}{severity}{affected} (score {best.score:.2f})"


@dataclass(frozen=True)
class TypicalImage:
    """One of the tested images that looks most drifted."""

    row: int  # row in the tested sample (and in ``CheckReport.images``)
    index: int  # position in the dataset split for a simulated sample, else the row in the uploaded batch
    score: float  # drift score in [0, 1]: share of the reference that is nearer the reference than this
    name: str  # file name for real images, "" for a simulated sample


@dataclass(frozen=True)
class CheckReport:
    """The result of ``FittedReference.check``: detectors, decision, where the images sit, and more."""

    source: str  # what was checked: "drift spec gaussian_noise:3@0.5", "upload", file names, ...
    version: str | None  # model version of the reference (None for a reference built from embeddings)
    dataset: str  # dataset the reference comes from
    n: int  # images tested
    reference_n: int  # images in the reference
    spec: Any  # the DriftSpec of a simulated sample, else None
    results: tuple[DriftResult, ...]  # one per detector, in registry order
    decision: Decision | None  # the family-wise decision (None when detectors were not asked for)
    sample: Embeddings  # the tested images as the model sees them (labels only when known)
    coords: np.ndarray | None  # float32 n x 2: the sample in the reference's projection
    reference_coords: np.ndarray | None  # float32 reference_n x 2
    projection: str | None  # "umap" or "pca"
    drift_scores: np.ndarray | None  # float64 n: per-image drift score in [0, 1] (see reference.typical)
    typical: tuple[TypicalImage, ...]  # the most drift-typical images, most drifted first
    accuracy: float | None  # share correct when labels are known (a simulated sample)
    clean_accuracy: float | None  # the same images without the drift (simulated samples only)
    images: torch.Tensor | None  # uint8 n x 3 x h x w thumbnails of the tested images (h, w <= 64)
    file_names: tuple[str, ...] | None  # one per tested image for real images
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of images that could not be read
    estimates: tuple[Any, ...] = ()  # label-free accuracy estimates (zeal_core.estimate), best first
    diagnosis: Any = None  # what kind of drift (zeal_core.diagnose), or None
    pending: tuple[str, ...] = ()  # parts asked for that were still warming up (e.g. "estimates")
    timings: dict[str, float] = field(default_factory=dict)  # seconds: decode, embed, detectors, ...
    created: str = field(default_factory=now_text)  # ISO 8601 UTC
    class_names: tuple[str, ...] = ()  # names of the model's outputs (for texts about classes)
    settings: dict[str, Any] = field(default_factory=dict)  # the check settings used (profile, n, B, ...)

    @property
    def drift(self) -> bool | None:
        """The decision's verdict (None without detectors)."""
        return None if self.decision is None else self.decision.drift

    @property
    def estimated_accuracy(self) -> Any:
        """The first (preferred) label-free estimate, or None."""
        return self.estimates[0] if self.estimates else None

    @property
    def diagnosis_summary(self) -> str:
        """The diagnosis in one line (``diagnosis_text``), or why there is none."""
        if self.diagnosis is None:
            return "warming up (learning the shift signatures)" if "diagnosis" in self.pending else "none"
        return diagnosis_text(self.diagnosis, self.class_names)

    def result(self, detector: str) -> DriftResult:
        """The result of one detector.

        Raises:
            KeyError: That detector was not run.
        """
        for result in self.results:
            if result.detector == detector:
                return result
        raise KeyError(detector)

    def summary(self) -> str:
        """One line for logs and the command line."""
        verdict = "no decision" if self.decision is None else ("DRIFT" if self.decision.drift else "no drift")
        flagged = f" ({', '.join(self.decision.flagged)})" if self.decision and self.decision.flagged else ""
        estimate = self.estimated_accuracy
        guess = "" if estimate is None else f", estimated accuracy {estimate.accuracy:.1%}"
        cause = f", {self.diagnosis_summary}" if self.diagnosis is not None and self.drift else ""
        return f"{self.source}: {verdict}{flagged}, n = {self.n}{guess}{cause}"

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """JSON-ready form: everything but the arrays, which come only with ``per_image``.

        Args:
            per_image: Add one entry per tested image (file, prediction, confidence, drift score, coords).
        """
        out: dict[str, Any] = {
            "source": self.source, "created": self.created, "version": self.version, "dataset": self.dataset,
            "n": self.n, "reference_n": self.reference_n,
            "spec": None if self.spec is None else self.spec.text,
            "decision": None if self.decision is None else self.decision.to_dict(),
            "detectors": [_short(result) for result in self.results],
            "accuracy": self.accuracy, "clean_accuracy": self.clean_accuracy,
            "estimates": [estimate.to_dict() for estimate in self.estimates],
            "diagnosis": None if self.diagnosis is None else {**self.diagnosis.to_dict(),
                                                              "summary": self.diagnosis_summary},
            "most_drifted": [{"row": item.row, "index": item.index, "score": item.score, "file": item.name}
                             for item in self.typical],
            "projection": self.projection, "pending": list(self.pending),
            "skipped": [{"file": name, "reason": reason} for name, reason in self.skipped],
            "timings": {key: round(value, 4) for key, value in self.timings.items()},
            "settings": self.settings,
        }
        if per_image:
            out["images"] = self._per_image()
        return to_jsonable(out, nan_to_none=True)

    def _per_image(self) -> list[dict[str, Any]]:
        probs = np.asarray(self.sample.probs)
        rows = []
        for row in range(self.n):
            rows.append({
                "row": row, "file": self.file_names[row] if self.file_names else None,
                "index": int(self.sample.indices[row]), "prediction": int(self.sample.preds[row]),
                "confidence": float(probs[row].max()) if probs.size else None,
                "drift_score": None if self.drift_scores is None else float(self.drift_scores[row]),
                "x": None if self.coords is None else float(self.coords[row, 0]),
                "y": None if self.coords is None else float(self.coords[row, 1]),
            })
        return rows


def _short(result: DriftResult) -> dict[str, Any]:
    """A detector result without its long per-dimension lists."""
    values = result.to_dict()
    values["details"] = {key: value for key, value in values["details"].items() if key not in _LONG_DETAILS}
    return values
