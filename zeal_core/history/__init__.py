"""The history of checks of real batches (SQLite), their stored images, and the retrain policy over them.

``record_check(report, images=...)`` is what the command line, the upload page and the monitor call after a
check: it stores the report, keeps the images for a later adaptation, and lets the policy act.
"""

from __future__ import annotations

from typing import Any

import torch

from zeal_core.history.batches import load_batch, prune_batches, save_batch
from zeal_core.history.policy import HistoryPolicy, apply_policy, checks_to_adapt_on, load_policy, save_policy
from zeal_core.history.schema import SCHEMA_VERSION, migrate, schema_version
from zeal_core.history.store import CheckRow, HistoryStore, default_path
from zeal_core.reference.report import CheckReport


def record_check(report: CheckReport, *, images: torch.Tensor | None = None, origin: str = "cli",
                 store: HistoryStore | None = None, queue: Any = None,
                 max_side: int = 224) -> tuple[int, dict[str, Any] | None]:
    """Record a check, keep its images for adaptation, and let the retrain policy act.

    Args:
        report: The check.
        images: The tested images (uint8), kept at most ``max_side`` px a side so that the policy can adapt
            on them; None keeps no images.
        origin: "cli", "upload", "monitor" or "api".
        store: The history; the default one when None.
        queue: The job queue the policy submits to; the default one when None.
        max_side: Largest side (px) the images are stored at (pass the model's input size).

    Returns:
        (the check's id, what the policy did or None).
    """
    store = store if store is not None else HistoryStore()
    check_id = store.record(report, origin=origin)
    if images is not None:
        store.set_batch_file(check_id, save_batch(store.path, check_id, images, max_side))
        for name in prune_batches(store.path):
            store.set_batch_file(int(name.split(".")[0]), None)
    action = None
    if report.version is not None:
        action = apply_policy(store, report.version, report.dataset, queue=queue)
    return check_id, action


__all__ = [
    "SCHEMA_VERSION",
    "CheckRow",
    "HistoryPolicy",
    "HistoryStore",
    "apply_policy",
    "checks_to_adapt_on",
    "default_path",
    "load_batch",
    "load_policy",
    "migrate",
    "prune_batches",
    "record_check",
    "save_batch",
    "save_policy",
    "schema_version",
]
