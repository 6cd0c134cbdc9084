"""The retrain policy's rule: k alarms within a window, then a cool-down (shared by the simulated monitor
and the history of real checks).

Positions count batches (the monitor) or recorded checks of one model (the history). An alarm counts only
when it falls within the last ``window`` positions and after the last time the policy fired, so one burst
of alarms triggers one retrain; after firing, the policy waits ``cooldown`` positions before it may fire
again (the new model needs a few batches to show whether it helped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zeal_core.errors import ConfigError

# share (2 points): the most clean accuracy an adapted version may lose against its parent and still be
# offered (the guard's default, the history policy's promotion margin); written once, here
MAX_CLEAN_DROP = 0.02


@dataclass(frozen=True)
class AlarmRule:
    """When alarms add up to a retrain."""

    alarms_to_retrain: int = 3  # k: alarms within the window that trigger a retrain
    window: int = 5  # positions (batches, checks) the alarm count looks back over
    cooldown: int = 10  # positions after a retrain before the policy may retrain again
    max_retrains: int | None = None  # the policy fires at most this often; None: no limit

    def __post_init__(self) -> None:
        if self.alarms_to_retrain < 1 or self.window < 1:
            raise ConfigError(f"alarms_to_retrain ({self.alarms_to_retrain}) and window ({self.window}) must "
                              "be at least 1")
        if self.alarms_to_retrain > self.window:
            raise ConfigError(f"alarms_to_retrain ({self.alarms_to_retrain}) cannot exceed window "
                              f"({self.window}): the policy would never fire")
        if self.cooldown < 0 or (self.max_retrains is not None and self.max_retrains < 0):
            raise ConfigError("cooldown and max_retrains must be >= 0")

    def recent_alarms(self, alarms: Sequence[int], position: int, last_fire: int | None) -> list[int]:
        """The alarm positions that count at ``position``: within the window and after the last fire."""
        return [alarm for alarm in alarms
                if position - self.window < alarm <= position and (last_fire is None or alarm > last_fire)]

    def fires(self, alarms: Sequence[int], position: int, last_fire: int | None, fired: int = 0) -> bool:
        """Whether the policy retrains at ``position``.

        Args:
            alarms: Positions that raised an alarm so far (``position`` included if it did).
            position: The current position.
            last_fire: Where the policy last fired, or None.
            fired: How often it has fired so far (against ``max_retrains``).
        """
        cooled = last_fire is None or position - last_fire >= self.cooldown
        allowed = self.max_retrains is None or fired < self.max_retrains
        return cooled and allowed and len(self.recent_alarms(alarms, position, last_fire)) >= \
            self.alarms_to_retrain
