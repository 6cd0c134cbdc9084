"""The history of checks of real batches (SQLite), their stored images, and the retrain policy over them.

The history stores and answers queries; it never submits a job or sends an alert. ``store_check(report,
images=...)`` keeps a check and its images; ``policy.decide`` says whether the retrain policy fires. The
check service (``zeal_core.service``) calls both, then queues the job and sends the alerts.
"""

from __future__ import annotations

import torch

from zeal_core.history.batches import load_batch, prune_batches, save_batch
from zeal_core.history.policy import (
    HistoryPolicy,
    PolicyDecision,
    checks_to_adapt_on,
    decide,
    load_policy,
    note_queued,
    save_policy,
)
from zeal_core.history.schema import SCHEMA_VERSION, migrate, schema_version
from zeal_core.history.store import CheckRow, HistoryStore, default_path
from zeal_core.reference.report import CheckReport


def store_check(report: CheckReport, *, images: torch.Tensor | None = None, origin: str = "cli",
                store: HistoryStore | None = None, max_side: int = 224) -> int:
    """Record a check and keep its images for a later adaptation; returns the check's id.

    Only storage: the check service (``zeal_core.service.CheckService.record``) calls this, then lets the
    retrain policy decide and sends the alerts.

    Args:
        report: The check.
        images: The tested images (uint8), kept at most ``max_side`` px a side so that the policy can adapt
            on them; None keeps no images.
        origin: "cli", "upload", "monitor" or "api".
        store: The history; the default one when None.
        max_side: Largest side (px) the images are stored at (pass the model's input size).
    """
    store = store if store is not None else HistoryStore()
    check_id = store.record(report, origin=origin)
    if images is not None:
        store.set_batch_file(check_id, save_batch(store.path, check_id, images, max_side))
        for name in prune_batches(store.path):
            store.set_batch_file(int(name.split(".")[0]), None)
    return check_id


__all__ = [
    "SCHEMA_VERSION",
    "CheckRow",
    "HistoryPolicy",
    "HistoryStore",
    "PolicyDecision",
    "checks_to_adapt_on",
    "decide",
    "default_path",
    "load_batch",
    "load_policy",
    "migrate",
    "note_queued",
    "prune_batches",
    "save_batch",
    "save_policy",
    "schema_version",
    "store_check",
]
