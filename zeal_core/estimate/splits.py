"""Leave-one-corruption-out: the split under which anything fitted on synthetic shifts is scored.

An estimator fitted on a shift bank has seen how the model reacts to every corruption in it; scoring it on
one of those corruptions measures memory, not generalisation. Each fold holds one corruption out: the
estimator is fitted on the bank without it and scored only on that corruption (at every severity), and only
on images it was not fitted on (the sample half of the split; the bank is built from the reference half).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zeal_core.errors import ConfigError

if TYPE_CHECKING:
    from zeal_core.shifts import ShiftedSet


@dataclass(frozen=True)
class CorruptionFold:
    """One fold: fit on ``fit`` (every other corruption), score on shifts of ``held_out`` only."""

    held_out: str  # the corruption (kind) left out of the fit
    fit: tuple[ShiftedSet, ...]  # the bank without any shift of ``held_out``


def bank_corruptions(bank: Sequence[ShiftedSet]) -> list[str]:
    """The corruptions in a bank, in order of first appearance."""
    return list(dict.fromkeys(shifted.corruption for shifted in bank))


def leave_one_corruption_out(bank: Sequence[ShiftedSet], corruptions: Sequence[str] | None = None
                             ) -> list[CorruptionFold]:
    """One fold per corruption: the bank minus every shift of that corruption.

    Args:
        bank: The shift bank (``zeal_core.shifts.build_shift_bank`` output).
        corruptions: Which corruptions to hold out, in this order (default: every one in the bank). A name
            absent from the bank gives a fold with the whole bank (a kind the bank never had is held out
            by construction, e.g. a new drift kind scored against an ImageNet-C bank).

    Raises:
        ConfigError: The bank has fewer than two corruptions (a fold would fit on nothing).
    """
    names = bank_corruptions(bank)
    held = list(corruptions) if corruptions is not None else names
    if len(names) < 2 and any(name in names for name in held):
        raise ConfigError(f"leave-one-corruption-out needs a bank with at least two corruptions, got {names}")
    return [CorruptionFold(held_out=name, fit=tuple(s for s in bank if s.corruption != name))
            for name in held]
