"""Alerts: a JSON POST to a webhook when a check flags drift or the retrain policy queues an adaptation.

The body carries a Slack-compatible ``text`` (one readable message naming the batch, the decision, the
estimated accuracy and the diagnosis) beside the same facts as fields for other receivers. A hook that is
down or slow never fails the check: each event is tried ``1 + retries`` times with exponential backoff
(``backoff_s``, doubled each time; a 4xx answer other than 429 is not retried, it will not change), and the
result says whether it was sent, how often it was tried and the last error. The URL's path (a Slack hook's
secret) is never printed: results name its scheme and host only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from zeal_core.errors import ConfigError
from zeal_core.jsonable import to_jsonable

EVENTS = ("drift", "policy")  # a check that flagged drift; a policy that queued an adaptation
USER_AGENT = "zeal-drift-lab-alerts/1"


@dataclass(frozen=True)
class AlertResult:
    """What happened to one alert."""

    event: str  # "drift" or "policy"
    sent: bool  # the hook answered 2xx
    attempts: int  # POSTs made (1 + retries at most)
    status: int | None  # the last HTTP status, None when no answer came
    error: str | None  # why it was not sent, if it was not
    target: str  # scheme://host[:port] of the hook (the path may hold a secret)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def check_url(url: str) -> str:
    """``url`` if it can take alerts ("" switches them off).

    Raises:
        ConfigError: Not an http(s) URL with a host.
    """
    if url == "":
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"webhook_url {url!r} must be an http:// or https:// URL with a host (\"\" = off)")
    return url


def target_of(url: str) -> str:
    """scheme://host[:port] of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def alert_text(event: str, report: Any, check_id: int | None, action: dict[str, Any] | None) -> str:
    """The one message of an alert (Slack's ``text``): batch, decision, estimate, diagnosis, policy."""
    where = f"check #{check_id}" if check_id is not None else "check"
    decision = report.decision
    verdict = "no decision" if decision is None else ("DRIFT" if decision.drift else "no drift")
    flagged = "" if decision is None else f" ({len(decision.flagged)}/{decision.detectors} detectors " \
                                          f"below alpha/k = {decision.threshold:.3g})"
    estimate = report.estimated_accuracy
    guess = "not estimated" if estimate is None else \
        f"{_percent(estimate.accuracy)} ({estimate.level:.0%} interval {_percent(estimate.low)}-" \
        f"{_percent(estimate.high)}, {estimate.estimator})"
    lines = [f"Zeal Drift Lab: {verdict} in {where} of model {report.version} on {report.n} images"
             f"{flagged}",
             f"batch: {report.source}",
             f"estimated accuracy: {guess}",
             f"diagnosis: {report.diagnosis_summary}"]
    if event == "policy" and action:
        lines.append(f"retrain policy: queued {action.get('strategy')} (job {action.get('job')}) on checks "
                     f"{action.get('check_ids')}")
    return "\n".join(lines)


def alert_payload(event: str, report: Any, check_id: int | None, action: dict[str, Any] | None,
                  history: str | None) -> dict[str, Any]:
    """The JSON body: Slack's ``text`` plus the facts as fields."""
    estimate = report.estimated_accuracy
    return to_jsonable({
        "text": alert_text(event, report, check_id, action), "event": event, "check_id": check_id,
        "history": history, "model": report.version, "dataset": report.dataset, "batch": report.source,
        "n": report.n, "created": report.created,
        "decision": None if report.decision is None else report.decision.to_dict(),
        "estimate": None if estimate is None else estimate.to_dict(),
        "diagnosis": report.diagnosis_summary, "policy": action,
    }, nan_to_none=True)


def send_webhook(url: str, payload: dict[str, Any], *, event: str, retries: int = 3, timeout_s: float = 5.0,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> AlertResult:
    """POST ``payload`` as JSON to ``url``, retrying; never raises.

    Args:
        url: The hook (http or https).
        payload: The JSON body.
        event: What the alert is about, for the result.
        retries: Further attempts after a failed first one.
        timeout_s: Seconds to wait for each answer.
        backoff_s: Wait before the first retry; doubled before each further one.
        sleep: How to wait (tests pass a recorder).
    """
    body = json.dumps(payload).encode("utf-8")
    attempts, status, error = 0, None, None
    for attempt in range(1 + max(0, int(retries))):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        attempts += 1
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # http(s): check_url
                status = int(response.status)
            return AlertResult(event=event, sent=True, attempts=attempts, status=status, error=None,
                               target=target_of(url))
        except urllib.error.HTTPError as failure:
            status, error = int(failure.code), f"HTTP {failure.code} {failure.reason}"
            if 400 <= failure.code < 500 and failure.code != 429:
                break  # the hook refuses this request: retrying will not help
        except (OSError, ValueError) as failure:  # refused, unreachable, timed out, bad answer
            status, error = None, f"{type(failure).__name__}: {failure}"
    return AlertResult(event=event, sent=False, attempts=attempts, status=status, error=error,
                       target=target_of(url))
