r"""The guard: no adapted version is offered as better unless it is not worse, on clean data and on the drift.

``adapt`` calls ``judge`` after every strategy, labelled or not, so no caller (the Retrain button, the command
line, the monitor's policy, the history's policy) can skip it. It compares the candidate with its parent on

- **clean data**: accuracy on the labelled clean reference (the validation split). Losing more than
  ``max_clean_drop`` (2 points by default) refuses the candidate;
- **the drift**: the label-free accuracy estimate (``zeal_core.estimate``, ``estimator``) on the drifted
  images the candidate adapted on, each model's estimator fitted on that model's own view of the clean
  reference (so an adapted model's changed confidence is calibrated away). An estimate more than
  ``max_drifted_loss`` (2 points) below the parent's refuses it: the estimators err by a few points, so a
  strict comparison would refuse good versions on noise. When the drift is simulated, labelled drifted
  images exist too, and a measured drifted accuracy more than ``max_measured_loss`` (0) below the parent's
  also refuses it.
- **a credible gain** (opt-in, ``min_gain_z``; ``CREDIBLE_GAIN_Z``): a version that is not worse must also
  be *credibly better* by the same label-free estimate, or the guard declines it and the parent keeps
  serving. A changed model can only gain or lose on the k of n drifted images whose predicted class
  changed; if the change helped no more than it hurt, each of those images is a coin flip and the accuracy
  difference has standard error at most :math:`\sqrt{k}/n`. The estimated gain, capped at :math:`k/n` (the
  most the changed predictions can gain: an estimate that rose more only grew more confident), must exceed
  ``min_gain_z`` (1.645: a one-sided 95 % bound) times that. So a tie, or a gain of one or two images on a
  small batch, is declined, and what is then served equals the parent's predictions exactly; a version that
  changed fewer than :math:`z^2` (3) predictions is always declined. Opt-in because on one small batch it
  also declines real gains: the monitor's one-batch retrain of the test digits model (64 images, estimated
  +6.2, measured +9.6 points, 11 predictions changed: bound 8.5) would not be deployed.

A refused version is still saved, marked (``metrics["guard"]``), so a user can inspect it; it is never made
active automatically (job ``activate``, the history policy's ``promote="auto"``, the monitor's policy), and
the Retrain page asks for confirmation before a user activates it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zeal_core.config import build
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.retrain.base import MAX_CLEAN_DROP

DEFAULT_ESTIMATOR = "pm-atc"  # the most accurate estimator that needs no shift bank (docs/estimation.md)
CREDIBLE_GAIN_Z = 1.645  # min_gain_z of the credible-gain rule: a one-sided 95 % bound, fixed a priori


@dataclass(frozen=True)
class GuardConfig:
    """When a candidate version counts as not worse than its parent."""

    max_clean_drop: float = MAX_CLEAN_DROP  # share: clean reference accuracy may fall at most this much
    # share: drifted accuracy (estimated or measured) may fall at most this much; label-free estimates err
    # by a few points (docs/estimation.md), so a strict 0 would refuse good versions on the estimator's noise
    max_drifted_loss: float = 0.02
    max_measured_loss: float = 0.0  # share: the same for the measured drifted accuracy (simulated drift only)
    estimator: str = DEFAULT_ESTIMATOR  # label-free estimator for the drifted images (list_estimators())
    max_images: int = 1024  # drifted images the estimate looks at, at most (seeded subset)
    # z: the estimated drifted gain must exceed z * sqrt(changed predictions) / images, the gain chance alone
    # gives (module docstring; CREDIBLE_GAIN_Z = 1.645, a one-sided 95 % bound). None (default): not worse
    # suffices. On small batches it also declines real gains (docs/retraining.md), so it is opt-in
    min_gain_z: float | None = None

    def __post_init__(self) -> None:
        from zeal_core.estimate import estimator_info

        for name in ("max_clean_drop", "max_drifted_loss", "max_measured_loss"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"guard {name} must be a share in [0, 1), got {getattr(self, name)!r}")
        if self.min_gain_z is not None and not 0.0 <= self.min_gain_z < 10.0:
            raise ConfigError(f"guard min_gain_z must be in [0, 10) or None, got {self.min_gain_z!r}")
        if self.max_images < 10:
            raise ConfigError(f"guard max_images must be at least 10, got {self.max_images}")
        if estimator_info(self.estimator).needs_bank:
            raise ConfigError(f"guard estimator {self.estimator!r} needs a shift bank; use one that does not")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> GuardConfig:
        """Build from a dict (job params, options); unknown keys raise ``ConfigError``."""
        return build(cls, values or {}, "guard")


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's comparison of a candidate with its parent (shares in [0, 1])."""

    passed: bool  # True: not worse on clean data (within the margin) nor on the drift
    reasons: tuple[str, ...]  # why it was refused, in words (empty when it passed)
    clean_before: float  # parent's accuracy on the clean labelled reference
    clean_after: float  # candidate's
    max_clean_drop: float  # the margin it was held to
    estimator: str | None  # estimator of the drifted accuracy (None: no drifted images)
    estimated_before: float | None  # parent's estimated accuracy on the drifted images (no labels)
    estimated_after: float | None  # candidate's
    drifted_images: int  # how many drifted images the estimate used
    measured_before: float | None = None  # parent's measured drifted accuracy (simulated drift only)
    measured_after: float | None = None  # candidate's
    changed_predictions: int | None = None  # drifted images whose predicted class the candidate changed
    gain_bound: float | None = None  # share: the estimated gain it had to exceed (None: no gain required)

    @property
    def clean_drop(self) -> float:
        """Clean accuracy lost (negative: gained)."""
        return self.clean_before - self.clean_after

    @property
    def declined(self) -> bool:
        """Not passed only for want of a credible gain (``min_gain_z``): not worse, not credibly better."""
        return bool(self.reasons) and all(reason.startswith("declined:") for reason in self.reasons)

    @property
    def label(self) -> str:
        """The verdict in a word: passed, declined or refused (the Retrain page's versions table)."""
        return "passed" if self.passed else ("declined" if self.declined else "refused")

    @property
    def summary(self) -> str:
        """One line for a page, a log or a policy event."""
        parts = [f"clean {self.clean_before:.1%} -> {self.clean_after:.1%}"]
        if self.estimated_before is not None and self.estimated_after is not None:
            parts.append(f"estimated on the drifted images {self.estimated_before:.1%} -> "
                         f"{self.estimated_after:.1%}")
        if self.measured_before is not None and self.measured_after is not None:
            parts.append(f"measured drifted {self.measured_before:.1%} -> {self.measured_after:.1%}")
        if self.passed:
            head = "guard passed"
        elif self.declined:  # not worse, only not credibly better
            head = "guard declined: " + "; ".join(reason.removeprefix("declined: ")
                                                  for reason in self.reasons)
        else:
            head = "guard refused: " + "; ".join(self.reasons)
        return f"{head} ({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the card's metrics), with the summary."""
        values = asdict(self)
        values["reasons"] = list(self.reasons)
        values["clean_drop"] = self.clean_drop
        values["declined"] = self.declined
        values["summary"] = self.summary
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GuardVerdict:
        """Inverse of ``to_dict`` (derived keys ignored)."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        known["reasons"] = tuple(known.get("reasons", ()))
        return cls(**known)


def estimated_accuracy(estimator: str, clean: Embeddings, drifted: Embeddings, seed: int = 0) -> float:
    """Label-free accuracy estimate on ``drifted``, the estimator fitted on ``clean`` (labelled)."""
    from zeal_core.estimate import create_estimator

    return float(create_estimator(estimator, seed=seed, bootstrap=100).fit(clean).estimate(drifted).accuracy)


def judge(parent_clean: Embeddings, candidate_clean: Embeddings, parent_drifted: Embeddings | None,
          candidate_drifted: Embeddings | None, config: GuardConfig | None = None,
          measured: tuple[float, float] | None = None) -> GuardVerdict:
    """Compare a candidate version with its parent (module docstring).

    Args:
        parent_clean: The parent's embeddings of the clean labelled reference.
        candidate_clean: The candidate's embeddings of the same images, same order.
        parent_drifted: The parent's embeddings of the drifted images (labels are never read), or None.
        candidate_drifted: The candidate's, same images.
        config: Margins and estimator; defaults when None.
        measured: (parent, candidate) accuracy on labelled drifted images, when the drift is simulated.

    Raises:
        ConfigError: The clean reference has no labels.
    """
    config = config or GuardConfig()
    if parent_clean.labels is None or candidate_clean.labels is None:
        raise ConfigError("the guard needs the clean reference's labels")
    clean_before, clean_after = float(parent_clean.accuracy), float(candidate_clean.accuracy)
    reasons = []
    if clean_before - clean_after > config.max_clean_drop + 1e-12:
        reasons.append(f"loses {100 * (clean_before - clean_after):.1f} points of clean accuracy (more than "
                       f"the {100 * config.max_clean_drop:g}-point margin)")
    estimated = (None, None)
    n_drifted, changed, bound = 0, None, None
    if parent_drifted is not None and candidate_drifted is not None and len(parent_drifted) > 0:
        n_drifted = len(parent_drifted)
        estimated = (estimated_accuracy(config.estimator, parent_clean, parent_drifted),
                     estimated_accuracy(config.estimator, candidate_clean, candidate_drifted))
        changed = int((np.asarray(parent_drifted.preds) != np.asarray(candidate_drifted.preds)).sum())
        if estimated[1] < estimated[0] - config.max_drifted_loss - 1e-12:
            reasons.append(f"estimated {100 * (estimated[0] - estimated[1]):.1f} points worse on the drifted "
                           "images")
        elif config.min_gain_z is not None:
            bound = config.min_gain_z * math.sqrt(changed) / n_drifted
            # accuracy can only move on the changed predictions: a larger estimated gain is not evidence
            gain = min(estimated[1] - estimated[0], changed / n_drifted)
            if gain <= bound + 1e-12:
                reasons.append(no_credible_gain(gain, bound, changed, n_drifted))
    if measured is not None and measured[1] < measured[0] - config.max_measured_loss - 1e-12:
        reasons.append(f"measured {100 * (measured[0] - measured[1]):.1f} points worse on the drifted "
                       "validation images")
    return GuardVerdict(
        passed=not reasons, reasons=tuple(reasons), clean_before=clean_before, clean_after=clean_after,
        max_clean_drop=config.max_clean_drop, estimator=config.estimator if n_drifted else None,
        estimated_before=estimated[0], estimated_after=estimated[1], drifted_images=n_drifted,
        measured_before=None if measured is None else float(measured[0]),
        measured_after=None if measured is None else float(measured[1]), changed_predictions=changed,
        gain_bound=bound)


def no_credible_gain(gain: float, bound: float, changed: int, images: int) -> str:
    """The reason, in words, for declining a version that is not credibly better on the drift."""
    return (f"declined: no credible gain on the drifted images (estimated {100 * gain:+.1f} points; the "
            f"{changed} of {images} predictions it changed give up to {100 * bound:.1f} by chance), so the "
            "parent keeps serving")


def drifted_subset(images: Any, max_images: int, seed: int = 0) -> Any:
    """At most ``max_images`` of the drifted images, a seeded subset in their order (None stays None)."""
    if images is None:
        return None
    from zeal_core.sampling import seeded_subset

    return images[np.asarray(seeded_subset(images.shape[0], max_images, seed))]


def verdict_of(card: Any) -> GuardVerdict | None:
    """The guard verdict stored in a model card, or None (a trained, imported or older version)."""
    values = (getattr(card, "metrics", None) or {}).get("guard")
    return GuardVerdict.from_dict(values) if isinstance(values, dict) else None
