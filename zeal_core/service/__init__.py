"""The check service: one profile, one kept reference per model, one call that checks, records and acts.

- ``CheckProfile`` / ``get_profile`` / ``list_profiles`` (profile.py): the named check settings (reference
  size, permutations, detectors, alpha, parts) every caller uses; overrides are explicit and reported.
- ``CheckService`` (core.py): ``reference(version)`` (loaded from disk or fitted once and kept next to the
  model, ``zeal_core.reference.persist``), ``check``, ``record``, ``check_and_record``, ``check_files``.
- ``LabSettings`` (lab.py): the lab's profile choice and webhook, in the history database.
- alerts.py: the webhook (JSON POST with a Slack-compatible ``text``), retried, never failing a check.

See docs/check_service.md.
"""

from zeal_core.service.alerts import AlertResult, alert_payload, alert_text, send_webhook
from zeal_core.service.core import CheckOutcome, CheckService
from zeal_core.service.lab import LabSettings, load_lab_settings, save_lab_settings, update_lab_settings
from zeal_core.service.profile import (
    DEFAULT_PROFILE,
    CheckProfile,
    get_profile,
    list_profiles,
    profile_from_dict,
    register_profile,
)

__all__ = [
    "DEFAULT_PROFILE",
    "AlertResult",
    "CheckOutcome",
    "CheckProfile",
    "CheckService",
    "LabSettings",
    "alert_payload",
    "alert_text",
    "get_profile",
    "list_profiles",
    "load_lab_settings",
    "profile_from_dict",
    "register_profile",
    "save_lab_settings",
    "send_webhook",
    "update_lab_settings",
]
