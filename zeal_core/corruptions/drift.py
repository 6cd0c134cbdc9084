"""Drift specifications: corruptions applied in order to a seeded fraction of a batch.

Text form (cache keys, URLs, the command line): ``name:severity[+name:severity...][@fraction]``, e.g.
``gaussian_noise:3``, ``fog:2.5+contrast:1@0.3`` (also ``@30%``); ``clean`` means no drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zeal_core.corruptions.registry import apply as apply_corruption
from zeal_core.corruptions.registry import check_severity, corruption_info
from zeal_core.errors import ConfigError

CLEAN_TEXT = "clean"
_STEP_SEED_STRIDE = 1_000_003  # step i of a spec draws with seed * stride + i, so steps do not share noise


def _format_number(value: float) -> str:
    """Shortest stable text for a severity or fraction (at most 4 decimals): 3, 2.5, 0.125."""
    text = f"{round(value, 4):.4f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class DriftSpec:
    """Which corruptions, how strong, and on what share of a batch.

    Clean specifications are normalised to ``steps=(), fraction=1.0`` (steps at severity 0 are dropped, and
    a fraction of 0 means clean), so equal drifts compare and hash equal and share one text.
    """

    steps: tuple[tuple[str, float], ...] = ()  # (corruption name, severity in [0, 5]) applied in this order
    fraction: float = 1.0  # share of the batch that is corrupted, in [0, 1]

    def __post_init__(self) -> None:
        try:
            fraction = float(self.fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"drift fraction must be a number in [0, 1], got {self.fraction!r}") from None
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"drift fraction must be in [0, 1] (share of images corrupted), "
                              f"got {self.fraction!r}")
        steps = []
        for step in self.steps:
            if not isinstance(step, (tuple, list)) or len(step) != 2:
                raise ConfigError(f"drift step {step!r} must be a (corruption name, severity) pair")
            name, severity = step
            corruption_info(name)  # raises ConfigError naming the known corruptions
            level = round(check_severity(severity, name), 4)
            if level > 0.0:
                steps.append((name, level))
        if not steps or fraction == 0.0:
            steps, fraction = [], 1.0
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "fraction", round(fraction, 4))

    @classmethod
    def clean(cls) -> DriftSpec:
        """No drift."""
        return cls()

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        """Read ``name:severity[+name:severity...][@fraction]`` or ``clean``.

        Raises:
            ConfigError: the text does not follow the form, names an unknown corruption, or has a severity
                outside [0, 5] or a fraction outside [0, 1].
        """
        if not isinstance(text, str):
            raise ConfigError(f"drift spec must be text like 'fog:2.5+contrast:1@0.3', got {text!r}")
        source = text.strip()
        if source.lower() in (CLEAN_TEXT, "none", ""):
            if source == "":
                raise ConfigError("empty drift spec: use 'clean' or e.g. 'gaussian_noise:3' or 'fog:2.5@0.3'")
            return cls.clean()
        body, at, fraction_text = source.partition("@")
        fraction = 1.0
        if at:
            fraction = _parse_fraction(fraction_text.strip(), text)
        if body.strip().lower() == CLEAN_TEXT:
            return cls.clean()
        steps = []
        for part in body.split("+"):
            name, colon, severity_text = part.strip().partition(":")
            if not colon or not name.strip() or not severity_text.strip():
                raise ConfigError(f"drift spec {text!r}: step {part.strip()!r} must be name:severity, "
                                  "e.g. 'fog:2.5' (join steps with '+', add '@0.3' for a fraction)")
            try:
                severity = float(severity_text)
            except ValueError:
                raise ConfigError(f"drift spec {text!r}: severity {severity_text.strip()!r} is not a number "
                                  "in [0, 5]") from None
            steps.append((name.strip(), severity))
        return cls(tuple(steps), fraction)

    @property
    def is_clean(self) -> bool:
        """True when applying the spec changes nothing."""
        return not self.steps

    @property
    def text(self) -> str:
        """Canonical text form; ``DriftSpec.parse(spec.text) == spec``."""
        if self.is_clean:
            return CLEAN_TEXT
        body = "+".join(f"{name}:{_format_number(severity)}" for name, severity in self.steps)
        return body if self.fraction == 1.0 else f"{body}@{_format_number(self.fraction)}"

    def __str__(self) -> str:
        return self.text

    def affected_count(self, n: int) -> int:
        """How many of ``n`` images are corrupted: round(fraction * n), halves rounded up."""
        return 0 if self.is_clean else min(n, math.floor(self.fraction * n + 0.5))

    def affected_mask(self, n: int, seed: int = 0) -> torch.Tensor:
        """Boolean CPU mask of length ``n`` marking the corrupted images (a seeded random subset).

        For one seed the subsets are nested: a larger fraction corrupts a superset of the images.
        """
        mask = torch.zeros(n, dtype=torch.bool)
        count = self.affected_count(n)
        if count:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
            mask[order[:count]] = True
        return mask

    def apply(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Corrupt the seeded subset of ``images`` (N x 3 x H x W, uint8 or float in [0, 1]) with every step.

        Returns:
            A new tensor of the same shape, dtype and device; unaffected images are unchanged copies.
        """
        out = images.clone()
        if self.is_clean or images.shape[0] == 0:
            return out
        mask = self.affected_mask(images.shape[0], seed).to(images.device)
        subset = images[mask]
        for index, (name, severity) in enumerate(self.steps):
            subset = apply_corruption(subset, name, severity, seed=int(seed) * _STEP_SEED_STRIDE + index)
        out[mask] = subset
        return out


def _parse_fraction(text: str, spec: str) -> float:
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text)
    except ValueError:
        raise ConfigError(f"drift spec {spec!r}: fraction {text!r} is not a number; use e.g. '@0.3' or "
                          "'@30%'") from None
    value = value / 100.0 if percent else value
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"drift spec {spec!r}: fraction {text!r} must be in [0, 1] (or 0-100%)")
    return value
