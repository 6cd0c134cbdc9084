"""Severity sweeps: the same check at severities 0..5 of one step of a drift spec, or of the whole spec.

The Drift Lab's "against severity" curves and the benchmarks' per-severity tables come from here. A sweep
of one step changes only that step's severity and keeps the others as they are, so a curve for ``fog`` in
``gaussian_noise:3+fog:2`` shows what fog adds to the noise. Sweeping the whole spec scales every step
together: at x the strongest step has severity x and the others keep their ratio to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from zeal_core.corruptions import DriftSpec
from zeal_core.errors import ConfigError
from zeal_core.reference.fitted import FittedReference
from zeal_core.reference.report import CheckReport

WHOLE_SPEC = "whole spec"  # the sweep choice that scales every step together
SEVERITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)  # ImageNet-C's levels, and clean


def sweep_choices(spec: DriftSpec) -> list[str]:
    """What a sweep of ``spec`` can vary: each pixel step by name, its class mix by kind, and (with more than
    one of them) the whole spec."""
    names = list(dict.fromkeys(name for name, _ in spec.steps))
    if spec.class_mix is not None:
        names.append(spec.class_mix.kind)
    return names + ([WHOLE_SPEC] if len(names) > 1 else [])


def _levels(spec: DriftSpec) -> list[float]:
    levels = [level for _, level in spec.steps]
    return levels + ([spec.class_mix.severity] if spec.class_mix is not None else [])


def swept_spec(spec: DriftSpec, choice: str, severity: float) -> DriftSpec:
    """``spec`` with the chosen step at ``severity`` (0 drops it), or the whole spec scaled to it.

    Raises:
        ConfigError: ``choice`` is neither a step of the spec nor ``WHOLE_SPEC``.
    """
    mix = spec.class_mix
    if choice == WHOLE_SPEC:
        strongest = max(_levels(spec), default=0.0)
        factor = 0.0 if strongest == 0 else severity / strongest
        steps = tuple((name, min(5.0, level * factor)) for name, level in spec.steps)
        if mix is not None:
            mix = None if factor == 0 else dataclasses.replace(mix, severity=min(5.0, mix.severity * factor))
    elif choice in {name for name, _ in spec.steps}:
        steps = tuple((name, severity if name == choice else level) for name, level in spec.steps)
    elif mix is not None and choice == mix.kind:
        steps = spec.steps
        mix = None if severity == 0 else dataclasses.replace(mix, severity=severity)
    else:
        raise ConfigError(f"cannot sweep {choice!r}: choose one of {sweep_choices(spec)}")
    return dataclasses.replace(spec, steps=steps, class_mix=mix)


def current_severity(spec: DriftSpec, choice: str) -> float:
    """Where ``spec`` sits on the sweep's x axis."""
    if choice == WHOLE_SPEC:
        return max(_levels(spec), default=0.0)
    if spec.class_mix is not None and choice == spec.class_mix.kind:
        return spec.class_mix.severity
    return max((level for name, level in spec.steps if name == choice), default=0.0)


@dataclass(frozen=True)
class SeveritySweep:
    """One check per severity."""

    choice: str  # the swept step's name, or WHOLE_SPEC
    severities: tuple[float, ...]  # x values
    reports: tuple[CheckReport, ...]  # one per severity

    def p_values(self) -> dict[str, list[float]]:
        """Detector -> p-value per severity."""
        curves: dict[str, list[float]] = {}
        for report in self.reports:
            for result in report.results:
                curves.setdefault(result.detector, []).append(result.p_value)
        return curves

    def accuracy(self) -> list[float | None]:
        """True accuracy per severity (labels are known in a simulated sample)."""
        return [report.accuracy for report in self.reports]

    def estimated_accuracy(self) -> list[tuple[float, float, float] | None]:
        """The preferred label-free estimate per severity as (accuracy, low, high); None where the sweep
        ran without the "estimates" part."""
        estimates = [report.estimated_accuracy for report in self.reports]
        return [None if item is None else (item.accuracy, item.low, item.high) for item in estimates]


def severity_sweep(reference: FittedReference, spec: DriftSpec, choice: str, *, n: int, seed: int = 0,
                   severities: Sequence[float] = SEVERITIES,
                   parts: Sequence[str] = ("detectors",)) -> SeveritySweep:
    """Check ``spec`` with the chosen step (or the whole spec) at each severity (cached by the reference)."""
    reports = tuple(reference.check(swept_spec(spec, choice, float(level)), n=n, seed=seed, parts=parts)
                    for level in severities)
    return SeveritySweep(choice=choice, severities=tuple(float(level) for level in severities),
                         reports=reports)
