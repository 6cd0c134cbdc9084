"""The check's decision: several detectors, one family-wise error rate.

Each detector's p-value is valid on its own: under no drift, ``P(p < a) <= a``. Flagging a batch when *any*
of k detectors has ``p < alpha`` would flag a clean batch up to k times as often. Bonferroni's rule flags it
when the smallest p-value is below ``alpha / k``; by the union bound a clean batch is then flagged with
probability at most alpha, whatever the dependence between the detectors (they test the same images, so
they are strongly dependent and the rule is conservative: measured in ``bench check``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zeal_core.drift.base import DriftResult, bonferroni_p_value
from zeal_core.errors import ConfigError
from zeal_core.validate import check_alpha


@dataclass(frozen=True)
class Decision:
    """Drift or not, for the whole check, and the rule that says so."""

    drift: bool  # True when some detector's p-value is below ``threshold``
    alpha: float  # family-wise level: a clean batch is flagged at most this often
    detectors: int  # k, how many detectors were tested
    threshold: float  # alpha / k: the level each detector is held to
    flagged: tuple[str, ...]  # detectors whose p-value is below the threshold
    min_p_value: float  # the smallest p-value of the k
    adjusted_p_value: float  # min(1, k x smallest p): the family's Bonferroni p-value

    @property
    def rule(self) -> str:
        """The rule in one sentence, for reports and the command line."""
        k = self.detectors
        return (f"drift when any of the {k} detector(s) has p < {self.alpha:g} / {k} = {self.threshold:.3g} "
                f"(Bonferroni: a clean batch is flagged at most {self.alpha:.0%} of the time)")

    def to_dict(self) -> dict:
        """JSON-ready form, with the rule."""
        return {"drift": self.drift, "alpha": self.alpha, "detectors": self.detectors,
                "threshold": self.threshold, "flagged": list(self.flagged), "min_p_value": self.min_p_value,
                "adjusted_p_value": self.adjusted_p_value, "rule": self.rule}


def bonferroni(results: Sequence[DriftResult], alpha: float) -> Decision:
    """The family-wise decision over ``results`` at level ``alpha``.

    Raises:
        ConfigError: No results, or alpha outside (0, 1).
    """
    alpha = check_alpha(alpha)
    if not results:
        raise ConfigError("a decision needs at least one detector result")
    count = len(results)
    threshold = alpha / count
    p_values = [result.p_value for result in results]
    smallest = min(p_values)
    return Decision(drift=smallest < threshold, alpha=alpha, detectors=count, threshold=threshold,
                    flagged=tuple(result.detector for result in results if result.p_value < threshold),
                    min_p_value=smallest, adjusted_p_value=bonferroni_p_value(p_values))
