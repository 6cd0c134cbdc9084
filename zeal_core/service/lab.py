"""The lab's own settings for its checks: which profile every caller uses, and where alerts go.

Stored as one JSON value in the history database's settings table (``history.sqlite``), so the app, cron
jobs, CI steps and job workers that share a state folder share them; set with
``python -m zeal_core settings --set KEY=VALUE``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from zeal_core.config import build, override
from zeal_core.errors import ConfigError
from zeal_core.service.alerts import EVENTS, check_url
from zeal_core.service.profile import DEFAULT_PROFILE, CheckProfile, get_profile
from zeal_core.validate import check_int

SETTINGS_KEY = "lab_settings"  # the key in the history database's settings table


@dataclass(frozen=True)
class LabSettings:
    """Lab-wide check settings (see the module docstring)."""

    profile: str = DEFAULT_PROFILE  # the check profile every page, command and job uses
    profile_overrides: dict[str, Any] = field(default_factory=dict)  # lab-wide changes to it, e.g. alpha
    webhook_url: str = ""  # http(s) URL alerts are POSTed to; "" = no alerts
    alert_on: tuple[str, ...] = EVENTS  # which events alert: "drift" (a flagged check), "policy" (a job)
    webhook_retries: int = 3  # further attempts after a failed POST (0.5, 1, 2 s apart)
    webhook_timeout_s: float = 5.0  # seconds to wait for the hook's answer, per attempt

    def __post_init__(self) -> None:
        check_url(self.webhook_url)
        object.__setattr__(self, "alert_on", tuple(self.alert_on))
        unknown = [event for event in self.alert_on if event not in EVENTS]
        if unknown:
            raise ConfigError(f"alert_on {unknown}: choose from {list(EVENTS)}")
        check_int(self.webhook_retries, "webhook_retries", 0, 10)
        if not isinstance(self.webhook_timeout_s, (int, float)) or not 0 < self.webhook_timeout_s <= 60:
            raise ConfigError(f"webhook_timeout_s must be in (0, 60] seconds, got {self.webhook_timeout_s!r}")
        if not isinstance(self.profile_overrides, dict):
            raise ConfigError("profile_overrides must be a mapping of profile setting -> value")
        self.check_profile()  # an unknown profile or override fails when set, not at the next check

    def check_profile(self) -> CheckProfile:
        """The profile these settings choose, with the lab's overrides."""
        return get_profile(self.profile, self.profile_overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        values = asdict(self)
        values["alert_on"] = list(self.alert_on)
        return values


def load_lab_settings(store: Any) -> LabSettings:
    """The stored settings (defaults when none were saved) from a ``HistoryStore``."""
    return build(LabSettings, store.setting(SETTINGS_KEY, {}), "lab settings")


def save_lab_settings(store: Any, settings: LabSettings) -> None:
    """Store ``settings`` for every process sharing this history."""
    store.set_setting(SETTINGS_KEY, settings.to_dict())


def update_lab_settings(store: Any, values: dict[str, Any]) -> LabSettings:
    """Change some settings (strictly: unknown keys are an error listing the known ones) and store them."""
    settings = override(load_lab_settings(store), values, "lab settings")
    save_lab_settings(store, settings)
    return settings
