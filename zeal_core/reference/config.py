"""Settings of a fitted reference: what it is fitted on and how its checks decide."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zeal_core.errors import ConfigError
from zeal_core.validate import check_alpha, check_int

# What a check can compute, in the order it computes them; a caller may ask for a subset.
PARTS = ("detectors", "projection", "typical", "estimates", "diagnosis")
# Projection methods: "auto" is UMAP once its one-off compilation is warm, PCA until then.
PROJECTIONS = ("auto", "umap", "pca")


@dataclass(frozen=True)
class ReferenceConfig:
    """What a fitted reference is fitted on and how its checks decide."""

    reference_n: int | None = None  # clean held-out images in the reference; None = the whole reference half
    seed: int = 0  # seeds the reference draw and every detector's permutations and splits
    alpha: float = 0.05  # family-wise level: a clean batch is flagged at most this often (Bonferroni)
    detectors: tuple[str, ...] = ()  # detector names; () = every registered detector
    detector_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per detector, e.g. mmd B
    split: str = "val"  # the split whose two disjoint halves give the reference and the tested samples
    batch_size: int = 256  # images per forward pass
    bank_n: int = 200  # reference images the shift bank corrupts (95 shifts each: its warm-up cost)
    estimators: tuple[str, ...] = ()  # label-free accuracy estimators, preferred first; () = the default list

    def __post_init__(self) -> None:
        if self.reference_n is not None:
            check_int(self.reference_n, "reference_n", 2)
        check_int(self.seed, "seed", 0)
        check_alpha(self.alpha)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.bank_n, "bank_n", 20)
        if self.split not in ("val", "train"):
            raise ConfigError(f"reference split {self.split!r}: use 'val' (held out) or 'train'")
        object.__setattr__(self, "detectors", tuple(self.detectors))
        object.__setattr__(self, "estimators", tuple(self.estimators))
        if self.estimators:
            from zeal_core.estimate import estimator_info

            for name in self.estimators:
                estimator_info(name)  # raises ConfigError naming the registered ones

    def describe(self) -> dict[str, Any]:
        """The settings a report names (JSON-ready): what the reference is and how the check decides."""
        from zeal_core.drift import list_detectors

        return {"reference_n": self.reference_n, "seed": self.seed, "alpha": self.alpha,
                "detectors": list(self.detectors) or list_detectors(),
                "detector_options": {name: dict(values) for name, values in self.detector_options.items()},
                "split": self.split, "bank_n": self.bank_n, "estimators": list(self.estimators)}

    def cache_key(self) -> tuple:
        """A hashable form (the detector options as sorted text)."""
        options = tuple(sorted((name, tuple(sorted(values.items())))
                               for name, values in self.detector_options.items()))
        return (self.reference_n, self.seed, self.alpha, self.detectors, options, self.split,
                self.batch_size, self.bank_n, self.estimators)


def check_parts(parts: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``parts`` in canonical order (None = all of them).

    Raises:
        ConfigError: An unknown part (the message lists them).
    """
    if parts is None:
        return PARTS
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise ConfigError(f"unknown check part(s) {unknown}: choose from {', '.join(PARTS)}")
    return tuple(part for part in PARTS if part in parts)
