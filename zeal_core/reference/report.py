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


# What the diagnosis's cause kinds are called in sentences.
CAUSE_WORDS = {"no_drift": "no drift", "label_shift": "label shift", "unknown": "unknown shift"}
EXTRAPOLATION_NOTE = "an extrapolation: the batch is unlike every shift the estimator was fitted on"


def estimate_text(estimate: Any) -> str:
    """One line for an ``AccuracyEstimate``: "93.1 % (90 % interval 88.0-96.2 %, pm-atc)", with ", an
    extrapolation: ..." inside the brackets when the estimate says it is one."""
    if estimate is None:
        return "no estimate"
    note = f"; {EXTRAPOLATION_NOTE}" if getattr(estimate, "extrapolation", False) else ""
    return (f"{estimate.accuracy:.1%} ({estimate.level:.0%} interval {estimate.low:.1%}-{estimate.high:.1%}, "
            f"{estimate.estimator}{note})")


def overrule_text(diagnosis: Any) -> str:
    """The sentence a headline adds when the detectors' decision overruled the diagnosis's own scores
    (``details["overruled"]``), else ""."""
    overruled = (diagnosis.details or {}).get("overruled") if diagnosis is not None else None
    if not overruled:
        return ""
    favoured = CAUSE_WORDS.get(overruled["scores_favour"], overruled["scores_favour"])
    if overruled.get("detectors_say") == "no drift":
        return (f"The detectors found no drift, which overrules the diagnosis's scores: alone they would "
                f"say {favoured} ({overruled['score']:.2f}).")
    return (f"The detectors found drift although the diagnosis's scores alone favour no drift "
            f"({overruled['score']:.2f}): no known shift explains what they found.")


def diagnosis_text(diagnosis: Any, class_names: tuple[str, ...] = ()) -> str:
    """One line for a ``Diagnosis``: its verdict and top cause, e.g. "covariate shift: fog, severity 2.6
    (score 0.93)"; "label shift" names the (at most two) classes whose share grew most; "unknown shift"
    gives the nearest known kinds as weak hints. It always names the first of ``diagnosis.causes`` (the
    ranked table's first row), and adds a sentence when the detectors overruled the scores."""
    text, sentence = diagnosis_headline(diagnosis, class_names)
    return f"{text}. {sentence}" if sentence else text


def diagnosis_headline(diagnosis: Any, class_names: tuple[str, ...] = ()) -> tuple[str, str]:
    """(the verdict and its cause, the overrule sentence or ""): ``diagnosis_text`` in two parts, for a page
    that shows the first as a heading and the second under it."""
    if diagnosis is None:
        return "no diagnosis", ""
    return _verdict_text(diagnosis, class_names), overrule_text(diagnosis)


def _verdict_text(diagnosis: Any, class_names: tuple[str, ...]) -> str:
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
        nearest = [cause.kind for cause in diagnosis.causes if cause.kind != "unknown"][:2]
        hints = f" (nearest known, weak hints: {', '.join(CAUSE_WORDS.get(k, k) for k in nearest)})"
        return "unknown shift" + (hints if nearest else "")
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
        flag = " (an extrapolation)" if getattr(estimate, "extrapolation", False) else ""
        guess = "" if estimate is None else f", estimated accuracy {estimate.accuracy:.1%}{flag}"
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
