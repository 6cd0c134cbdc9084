"""Drift specifications: pixel drift kinds applied in order to a seeded fraction of a sample, and at most
one class-mix step that changes which images the sample holds.

Text form (cache keys, URLs, the command line, monitor schedules, DVC params), one line::

    [classmix+]name:severity[+name:severity...][@fraction]      or      clean

e.g. ``gaussian_noise:3``, ``fog:2.5+contrast:1@0.3`` (also ``@30%``), ``label_shift[boost=0/3]:4``,
``label_shift[drop=tench]:5+rotation:2@0.5``, ``unseen_classes:2``. Pixel kinds are every
``list_drift_kinds()`` name (ImageNet-C, geometric, capture); class-mix kinds are ``list_class_mix_kinds()``
(``label_shift``, ``unseen_classes``), optionally with a ``[mode=class/class]`` list (see
``zeal_core.corruptions.class_mix``). The fraction is the share of the sample whose *pixels* change; the
class mix applies to the whole sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zeal_core.corruptions.class_mix import (
    ClassMix,
    draw_class_mix,
    is_class_mix_step,
    known_class_mask,
    list_class_mix_kinds,
    uniform_draw,
)
from zeal_core.corruptions.class_mix import target_proportions as class_mix_targets
from zeal_core.corruptions.registry import apply as apply_corruption
from zeal_core.corruptions.registry import check_severity, corruption_info, list_drift_kinds
from zeal_core.errors import ConfigError

CLEAN_TEXT = "clean"
_STEP_SEED_STRIDE = 1_000_003  # step i of a spec draws with seed * stride + i, so steps do not share noise


def _format_number(value: float) -> str:
    """Shortest stable text for a severity or fraction (at most 4 decimals): 3, 2.5, 0.125."""
    text = f"{round(value, 4):.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _unknown_kind(name: object) -> ConfigError:
    return ConfigError(f"unknown corruption {name!r}: choose a pixel kind ({', '.join(list_drift_kinds())}) "
                       f"or a class-mix kind ({', '.join(list_class_mix_kinds())})")


def _pixel_step(name: object, severity: object) -> tuple[str, float]:
    """A validated (pixel kind, severity rounded to 4 decimals) pair."""
    if isinstance(name, str) and "[" in name:
        raise ConfigError(f"drift step {name!r}: a [mode=classes] list only goes with a class-mix kind "
                          f"({', '.join(list_class_mix_kinds())})")
    try:
        corruption_info(name)  # type: ignore[arg-type]
    except ConfigError:
        raise _unknown_kind(name) from None
    return str(name), round(check_severity(severity, str(name)), 4)


@dataclass(frozen=True)
class DriftSpec:
    """Which pixel drift kinds, how strong, on what share of a sample, and which class mix.

    Clean specifications are normalised: pixel steps at severity 0 are dropped, a fraction of 0 drops the
    pixel steps, no pixel step means ``fraction=1.0``, and a class mix at severity 0 is None. So equal drifts
    compare and hash equal and share one text. A class-mix step may also be given among ``steps`` (e.g.
    ``("label_shift[boost=0/3]", 4)``); it is moved to ``class_mix``.
    """

    steps: tuple[tuple[str, float], ...] = ()  # (pixel kind, severity in [0, 5]) applied in this order
    fraction: float = 1.0  # share of the sample whose pixels are changed, in [0, 1]
    class_mix: ClassMix | None = None  # which classes the sample holds (None: the pool's own mix)

    def __post_init__(self) -> None:
        try:
            fraction = float(self.fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"drift fraction must be a number in [0, 1], got {self.fraction!r}") from None
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"drift fraction must be in [0, 1] (share of images corrupted), "
                              f"got {self.fraction!r}")
        steps, mixes = [], [] if self.class_mix is None else [self.class_mix]
        for step in self.steps:
            if not isinstance(step, (tuple, list)) or len(step) != 2:
                raise ConfigError(f"drift step {step!r} must be a (kind name, severity) pair")
            name, severity = step
            if is_class_mix_step(name):
                mixes.append(ClassMix.parse(name, severity))
                continue
            name, level = _pixel_step(name, severity)
            if level > 0.0:
                steps.append((name, level))
        if not all(isinstance(mix, ClassMix) for mix in mixes):
            raise ConfigError(f"class_mix must be a ClassMix or None, got {self.class_mix!r}")
        if len(mixes) > 1:
            raise ConfigError(f"a drift spec holds at most one class-mix step "
                              f"({', '.join(list_class_mix_kinds())}), got {len(mixes)}: "
                              f"{', '.join(mix.step_name for mix in mixes)}")
        mix = mixes[0] if mixes and mixes[0].severity > 0 else None
        if not steps or fraction == 0.0:
            steps, fraction = [], 1.0
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "fraction", round(fraction, 4))
        object.__setattr__(self, "class_mix", mix)

    @classmethod
    def clean(cls) -> DriftSpec:
        """No drift."""
        return cls()

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        """Read ``name:severity[+name:severity...][@fraction]`` or ``clean`` (see the module docstring).

        Raises:
            ConfigError: the text does not follow the form, names an unknown kind, class-mix mode or class
                syntax, holds two class-mix steps, or has a severity outside [0, 5] or a fraction outside
                [0, 1].
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
        """True when the spec changes nothing: no pixel step and no class mix."""
        return not self.steps and self.class_mix is None

    @property
    def pixel_spec(self) -> DriftSpec:
        """The pixel part alone (the same spec without its class mix)."""
        return self if self.class_mix is None else DriftSpec(self.steps, self.fraction)

    @property
    def text(self) -> str:
        """Canonical text form, the class-mix step first; ``DriftSpec.parse(spec.text) == spec``."""
        if self.is_clean:
            return CLEAN_TEXT
        parts = [] if self.class_mix is None else [(self.class_mix.step_name, self.class_mix.severity)]
        body = "+".join(f"{name}:{_format_number(severity)}" for name, severity in [*parts, *self.steps])
        return body if self.fraction == 1.0 else f"{body}@{_format_number(self.fraction)}"

    def __str__(self) -> str:
        return self.text

    def affected_count(self, n: int) -> int:
        """How many of ``n`` images get their pixels changed: round(fraction * n), halves rounded up."""
        return 0 if not self.steps else min(n, math.floor(self.fraction * n + 0.5))

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
        """Corrupt the seeded subset of ``images`` (N x 3 x H x W, uint8 or float in [0, 1]) with every pixel
        step (the class mix is applied when the sample is drawn: ``draw_positions``).

        Returns:
            A new tensor of the same shape, dtype and device; unaffected images are unchanged copies.
        """
        out = images.clone()
        if not self.steps or images.shape[0] == 0:
            return out
        mask = self.affected_mask(images.shape[0], seed).to(images.device)
        subset = images[mask]
        for index, (name, severity) in enumerate(self.steps):
            subset = apply_corruption(subset, name, severity, seed=int(seed) * _STEP_SEED_STRIDE + index)
        out[mask] = subset
        return out

    def draw_positions(self, pool_labels: np.ndarray, n: int, seed: int, *, class_names: Sequence[str],
                       known_classes: Sequence[str] | None = None) -> np.ndarray:
        """Which images of a pool (the held-out half of a split) make up a sample of this drift.

        Args:
            pool_labels: Dataset class ids of the pool's images.
            n: Sample size.
            seed: Seeds the draw (and a random class prior); the same seed, the same sample.
            class_names: The dataset's class names (index = class id); class lists resolve against them.
            known_classes: The classes the model predicts (``ModelCard.class_names``); None = all.

        Returns:
            ``n`` distinct sorted positions into the pool. Without a class mix, a uniform draw without
            replacement from the pool's images of known classes: with every class known exactly
            ``np.random.default_rng(seed).choice(len(pool), n, replace=False)`` sorted, the draw
            ``zeal_core.embed.draw_positions`` makes. With a class mix, a draw that follows
            ``target_proportions`` (a class the pool cannot fill gives all it has and the rest is
            renormalised); classes the model does not know appear only in an ``unseen_classes`` drift.

        Raises:
            ConfigError: ``n`` below 1 or larger than the classes drawn from hold, unknown classes in the
                list, bad labels, or an ``unseen_classes`` drift for a model that knows every class.
        """
        if self.class_mix is None:
            return uniform_draw(pool_labels, n, seed, class_names, known_classes)
        return draw_class_mix(self.class_mix, pool_labels, n, seed, class_names, known_classes)

    def target_proportions(self, pool_labels: np.ndarray, class_names: Sequence[str], seed: int,
                           known_classes: Sequence[str] | None = None) -> np.ndarray:
        """The class shares a sample of this drift is meant to have (one per dataset class, summing to 1).

        Without a class mix these are the pool's own shares over the classes the model knows.

        Raises:
            ConfigError: As ``draw_positions``.
        """
        if self.class_mix is not None:
            return class_mix_targets(self.class_mix, pool_labels, class_names, seed, known_classes)
        labels = np.asarray(pool_labels, dtype=np.int64)
        shares = np.bincount(labels, minlength=len(class_names)).astype(np.float64)
        shares = np.where(known_class_mask(class_names, known_classes), shares[:len(class_names)], 0.0)
        if shares.sum() <= 0:
            raise ConfigError("the pool holds no image of a class the model knows")
        return shares / shares.sum()


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
