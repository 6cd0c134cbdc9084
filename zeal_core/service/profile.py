"""Check profiles: one named set of check settings that every page, command, job and benchmark uses.

The same images must get the same p-values and the same decision wherever they are checked. Before this
module the pages used 500 permutations and their own reference size, ``check`` 1000 permutations and the
whole reference half, the monitor its own; now every caller asks the check service for a reference under a
profile (``zeal_core.service.CheckService``) and the lab chooses the profile once (``settings`` command,
stored in the history database). A caller may override single settings explicitly (``--reference-n``); the
report then lists them under ``settings["overrides"]``.

Profiles register by name like detectors; ``standard`` is the default: mmd (the multivariate kernel test),
ks and cvm (each main direction of the features) and bbsd (the model's outputs), 1000 permutations. It
leaves out the three most expensive detectors, which ``full`` adds: mmd-fuse and mmd-agg build a table of
10 kernels x 1000 re-splits (about half of a check's compute on digits, three quarters on Imagenette) for
+0.03 detection rate over mmd in our Failing Loudly table, where ks, cvm and bbsd already do as well; c2st's
classifier needs scikit-learn (about a second to import in a fresh process, a fifth of a cron check's
budget). Measurements: docs/check_service.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zeal_core.config import build, override
from zeal_core.errors import ConfigError
from zeal_core.plugins import Registry
from zeal_core.reference.config import PARTS, ReferenceConfig, check_parts
from zeal_core.validate import check_alpha, check_int

# Detectors whose ``num_permutations`` option a profile's ``permutations`` sets.
PERMUTATION_DETECTORS = ("mmd", "mmd-fuse", "mmd-agg")
# c2st ranks drift-typical images by cross-fitting; a report scores every image itself (reference.typical).
FIXED_OPTIONS: dict[str, dict[str, Any]] = {"c2st": {"rank": False}}
DEFAULT_PROFILE = "standard"


@dataclass(frozen=True)
class CheckProfile:
    """The settings of a drift check (see the module docstring)."""

    name: str = DEFAULT_PROFILE  # the registered profile these settings come from
    reference_n: int | None = None  # clean held-out images in the reference; None = the whole reference half
    permutations: int = 1000  # B of the permutation tests (mmd, mmd-fuse, mmd-agg): p resolution 1/(B+1)
    detectors: tuple[str, ...] = ()  # detector names; () = every registered detector
    alpha: float = 0.05  # family-wise level of the decision (Bonferroni over the detectors)
    parts: tuple[str, ...] = PARTS  # what a check computes unless the caller asks for less
    seed: int = 0  # seeds the reference draw, the shift bank's draw and every detector
    bank_n: int = 200  # reference images the diagnosis's shift bank corrupts (its one-off warm-up)
    estimators: tuple[str, ...] = ()  # label-free estimators, preferred first; () = the default list
    overrides: tuple[str, ...] = ()  # settings a caller changed from the named profile (for reports)

    def __post_init__(self) -> None:
        if self.reference_n is not None:
            check_int(self.reference_n, "reference_n", 2)
        check_int(self.permutations, "permutations", 19, 1_000_000)  # 19: p can reach 0.05
        check_alpha(self.alpha)
        check_int(self.seed, "seed", 0)
        check_int(self.bank_n, "bank_n", 20)
        object.__setattr__(self, "detectors", tuple(self.detectors))
        object.__setattr__(self, "parts", check_parts(tuple(self.parts)))
        object.__setattr__(self, "estimators", tuple(self.estimators))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if self.detectors:
            from zeal_core.drift import detector_info

            for detector in self.detectors:
                detector_info(detector)  # a ConfigError naming the registered ones

    def detector_options(self) -> dict[str, dict[str, Any]]:
        """Per-detector options these settings imply (permutations, c2st without its ranking)."""
        options = {name: {"num_permutations": self.permutations} for name in PERMUTATION_DETECTORS}
        return {**options, **{name: dict(values) for name, values in FIXED_OPTIONS.items()}}

    def reference_config(self) -> ReferenceConfig:
        """The fitted reference's settings."""
        return ReferenceConfig(reference_n=self.reference_n, seed=self.seed, alpha=self.alpha,
                               detectors=self.detectors, detector_options=self.detector_options(),
                               bank_n=self.bank_n, estimators=self.estimators)

    def with_overrides(self, values: dict[str, Any] | None) -> CheckProfile:
        """These settings with ``values`` replacing some (strict: unknown names are a ConfigError); the
        changed names are listed in ``overrides``. None values mean "not given" and are ignored."""
        given = {key: value for key, value in (values or {}).items() if value is not None}
        if not given:
            return self
        if {"name", "overrides"} & set(given):
            raise ConfigError("a profile override cannot change 'name' or 'overrides': choose another "
                              f"profile by name ({', '.join(list_profiles())})")
        changed = override(self, given, f"check profile {self.name!r}")
        names = tuple(dict.fromkeys(self.overrides + tuple(key for key in given
                                                           if getattr(self, key) != getattr(changed, key))))
        return dataclasses.replace(changed, overrides=names)

    def describe(self) -> dict[str, Any]:
        """What a report says about the settings it used (JSON-ready)."""
        from zeal_core.drift import list_detectors

        return {"profile": self.name, "overrides": list(self.overrides), "reference_n": self.reference_n,
                "permutations": self.permutations,
                "detectors": list(self.detectors) or list_detectors(), "alpha": self.alpha,
                "parts": list(self.parts), "seed": self.seed, "bank_n": self.bank_n,
                "estimators": list(self.estimators)}

    def to_dict(self) -> dict[str, Any]:
        """The fields, JSON-ready."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


_PROFILES: Registry[CheckProfile] = Registry("check profile")


def register_profile(profile: CheckProfile) -> CheckProfile:
    """Add a named profile (``profile.name``) to the registry."""
    return _PROFILES.add(profile.name, profile)


def list_profiles() -> list[str]:
    """Names of the registered profiles, in registration order."""
    return _PROFILES.names()


def get_profile(name: str = DEFAULT_PROFILE, overrides: dict[str, Any] | None = None) -> CheckProfile:
    """The registered profile ``name``, with explicit ``overrides`` (None values are ignored).

    Raises:
        ConfigError: An unknown profile (the message lists them) or a bad override.
    """
    return _PROFILES.get(name).with_overrides(overrides)


def profile_from_dict(values: dict[str, Any], where: str = "check profile") -> CheckProfile:
    """A profile from stored fields (strict)."""
    return build(CheckProfile, values, where)


register_profile(CheckProfile(name="standard", detectors=("mmd", "ks", "cvm", "bbsd")))
register_profile(CheckProfile(name="full"))  # every registered detector, c2st included
register_profile(CheckProfile(
    name="quick", permutations=500, detectors=("mmd", "bbsd")))  # slow laptops, the demo
