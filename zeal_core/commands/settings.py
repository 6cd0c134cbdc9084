"""``settings``: the lab's check settings, shared by the app, cron jobs and workers (the history database).

::

    python -m zeal_core settings                                          # show them, and the profiles
    python -m zeal_core settings --set profile=full                       # every caller checks with it
    python -m zeal_core settings --set webhook_url=https://hooks.slack.com/services/...
    python -m zeal_core settings --test-alert                             # POST a test message now
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``settings`` command."""
    command = subparsers.add_parser(
        "settings", parents=[parent], help="the lab's check profile and alert webhook",
        description="Show or change the lab-wide check settings: profile (standard, full, quick), "
                    "profile_overrides (e.g. {\"alpha\": 0.01}), webhook_url (http(s), \"\" = off), alert_on "
                    "(drift, policy), webhook_retries, webhook_timeout_s.")
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="change a setting (repeatable), e.g. --set webhook_url=http://host/hook")
    command.add_argument("--test-alert", action="store_true",
                         help="POST a test message to the webhook and say whether it arrived")
    command.set_defaults(handler=run_settings)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Show, change, or test the settings."""
    from zeal_core.config import parse_pairs
    from zeal_core.errors import ConfigError
    from zeal_core.history import HistoryStore
    from zeal_core.service import get_profile, list_profiles, load_lab_settings, send_webhook
    from zeal_core.service.lab import update_lab_settings

    store = HistoryStore()
    settings = load_lab_settings(store)
    if args.set:
        settings = update_lab_settings(store, parse_pairs(args.set, "--set", "profile=standard"))
    output: dict[str, Any] = {"history": str(store.path), "settings": settings.to_dict(),
                              "profile": settings.check_profile().describe(),
                              "profiles": {name: get_profile(name).describe() for name in list_profiles()}}
    if args.test_alert:
        if not settings.webhook_url:
            raise ConfigError("no webhook set: python -m zeal_core settings --set webhook_url=URL")
        result = send_webhook(settings.webhook_url, {"text": "Zeal Drift Lab: test alert (settings "
                                                             "--test-alert)", "event": "test"},
                              event="test", retries=settings.webhook_retries,
                              timeout_s=settings.webhook_timeout_s)
        output["test_alert"] = result.to_dict()
        output["ok"] = result.sent
    return output
