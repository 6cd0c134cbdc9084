"""Automated retraining on real data: the monitor's alarm rule applied to the history of checks.

This module decides; it never submits. ``decide`` reads the history and says whether the policy fires;
the check service (``zeal_core.service``) queues the job and records it with ``note_queued``, so the
history imports nothing from the job system (no history -> jobs -> monitor -> history cycle).

When the policy is on and the last ``window`` checks of the active model hold ``alarms_to_retrain`` drift
decisions (counted after the policy last fired, and at least ``cooldown`` checks after it), it queues one
``adapt-history`` job: an unlabeled strategy (``zeal_core.retrain.unlabeled_strategies()``: bn-adapt,
tent, roid) adapts the model on the stored images of those drifted batches. The new version records its
parent and the checks it adapted on. It becomes active only when the user says so, or with
``promote="auto"`` only if the guard passes it (``zeal_core.retrain.guard``): clean validation accuracy
within ``margin`` of its parent's, and an estimated accuracy on the drifted checks' images not below the
parent's. The policy's event says which, in words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from zeal_core.config import build
from zeal_core.errors import ConfigError
from zeal_core.history.store import HistoryStore
from zeal_core.policy import MAX_CLEAN_DROP, AlarmRule

PROMOTE = ("manual", "auto")  # who makes the adapted version active: the user, or the clean-accuracy guard
POLICY_KEY = "retrain_policy"  # where the settings live in the history's settings table
SINCE_KEY = "retrain_policy_since"  # newest check id when the policy was switched on (it counts later ones)
JOB_KIND = "adapt-history"
REAL_ORIGINS = ("cli", "upload", "api")  # checks of real batches (the monitor's simulated ones never count)


@dataclass(frozen=True)
class HistoryPolicy:
    """The retrain policy over recorded checks (stored in the history database, shared by app and CLI)."""

    enabled: bool = False  # off until the user switches it on
    strategy: str = "bn-adapt"  # an unlabeled strategy: real batches have no labels
    alarms_to_retrain: int = 3  # k: drift decisions within the window that trigger adaptation
    window: int = 5  # recorded checks of the model the count looks back over
    cooldown: int = 5  # checks after a trigger before the policy may trigger again
    promote: str = "manual"  # "manual": the user activates the new version; "auto": if the guard passes it
    margin: float = MAX_CLEAN_DROP  # share: the guard's clean margin (clean >= the parent's minus this)
    options: dict[str, Any] | None = None  # options for the strategy (its options dataclass's fields)

    def __post_init__(self) -> None:
        from zeal_core.retrain import unlabeled_strategies

        if self.strategy not in unlabeled_strategies():
            raise ConfigError(f"history policy strategy {self.strategy!r}: real batches have no labels, so "
                              f"use one of {unlabeled_strategies()}")
        if self.promote not in PROMOTE:
            raise ConfigError(f"history policy promote {self.promote!r}: use one of {list(PROMOTE)}")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"history policy margin {self.margin!r} must be a share in [0, 1)")
        self.rule()  # checks k, window and cooldown

    def rule(self) -> AlarmRule:
        """The alarm rule these settings describe."""
        return AlarmRule(alarms_to_retrain=self.alarms_to_retrain, window=self.window, cooldown=self.cooldown)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def load_policy(store: HistoryStore) -> HistoryPolicy:
    """The stored policy (defaults, switched off, when none was saved)."""
    return build(HistoryPolicy, store.setting(POLICY_KEY, {}), "history policy")


def save_policy(store: HistoryStore, policy: HistoryPolicy) -> None:
    """Store the policy for every process using this history.

    Switching it on starts its count afresh: alarms recorded while it was off never trigger it.
    """
    if policy.enabled and not load_policy(store).enabled:
        newest = store.checks(limit=1)
        store.set_setting(SINCE_KEY, newest[-1].id if newest else 0)
    store.set_setting(POLICY_KEY, policy.to_dict())


def checks_to_adapt_on(store: HistoryStore, policy: HistoryPolicy, model_version: str) -> list[int] | None:
    """The ids of the drifted checks (with stored images) the policy adapts on now, or None.

    The positions are the model's checks recorded since the policy was switched on, in order; the policy
    last fired at the newest check of its last event for this model.
    """
    checks = [check for check in store.checks(model_version=model_version,
                                               since_id=int(store.setting(SINCE_KEY, 0)))
              if check.origin in REAL_ORIGINS]
    if not checks:
        return None
    ids = [check.id for check in checks]
    alarms = [position for position, check in enumerate(checks) if check.drift]
    events = [event for event in store.events(model_version) if event["action"] == "queued"]
    last_fire = None
    if events:
        newest = max(events[-1]["check_ids"])
        fired_at = [position for position, check_id in enumerate(ids) if check_id <= newest]
        last_fire = fired_at[-1] if fired_at else None
    position = len(checks) - 1
    rule = policy.rule()
    if not rule.fires(alarms, position, last_fire, fired=len(events)):
        return None
    chosen = [ids[alarm] for alarm in rule.recent_alarms(alarms, position, last_fire)
              if checks[alarm].batch_file]
    return chosen or None


@dataclass(frozen=True)
class PolicyDecision:
    """The policy fired: adapt ``model_version`` on the images of ``check_ids`` (the service queues it)."""

    model_version: str  # the model the alarms were raised on
    dataset: str  # its dataset
    check_ids: tuple[int, ...]  # the drifted checks (with stored images) to adapt on
    policy: HistoryPolicy  # the settings that fired

    def job_params(self, history_path: str) -> dict[str, Any]:
        """The ``adapt-history`` job's parameters."""
        policy = self.policy
        return {"model": self.model_version, "dataset": self.dataset, "strategy": policy.strategy,
                "check_ids": list(self.check_ids), "history": history_path, "promote": policy.promote,
                "margin": policy.margin, "options": policy.options or {}}


def decide(store: HistoryStore, model_version: str, dataset: str, *,
           policy: HistoryPolicy | None = None) -> PolicyDecision | None:
    """Whether the policy fires now for ``model_version`` (reads the history; queues nothing).

    Args:
        store: The history.
        model_version: The model the checks were made with.
        dataset: Its dataset.
        policy: The settings; the stored ones when None.
    """
    if policy is None:
        stored = store.setting(POLICY_KEY, {})
        if not (isinstance(stored, dict) and stored.get("enabled")):
            return None  # off: nothing to build (a cron check need not import the retraining code)
        policy = load_policy(store)
    if not policy.enabled:
        return None
    check_ids = checks_to_adapt_on(store, policy, model_version)
    if check_ids is None:
        return None
    return PolicyDecision(model_version=model_version, dataset=dataset, check_ids=tuple(check_ids),
                          policy=policy)


def note_queued(store: HistoryStore, decision: PolicyDecision, job_id: str) -> dict[str, Any]:
    """Record that ``decision``'s job was queued (the policy counts from here); returns what it did."""
    strategy = decision.policy.strategy
    store.add_event(decision.model_version, list(decision.check_ids), "queued", job_id=job_id,
                    detail=f"{len(decision.check_ids)} drifted checks -> {strategy}")
    return {"job": job_id, "check_ids": list(decision.check_ids), "strategy": strategy}
