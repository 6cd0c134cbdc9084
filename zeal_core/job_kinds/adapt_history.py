"""Job kind ``adapt-history``: adapt a model on the stored images of drifted checks (the history policy).

The new version is promoted (made active) only with ``promote="auto"`` and only when the guard passed it:
clean accuracy within ``margin`` of the parent's and an estimated accuracy on the drifted checks' images
not below the parent's. The policy event says why, in words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zeal_core.jobs.kinds import card_summary
from zeal_core.progress import CancelToken, ProgressCallback


def run_adapt_history(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken
                      ) -> dict[str, Any]:
    """Adapt on the checks' images, then promote the result only as the policy allows."""
    from zeal_core.history.batches import load_batch
    from zeal_core.history.store import HistoryStore
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt, verdict_of

    store = HistoryStore(Path(params["history"]))
    check_ids = [int(check_id) for check_id in params["check_ids"]]
    batches = [load_batch(store.path, store.get(check_id).batch_file) for check_id in check_ids]
    images = torch.cat(batches)
    margin = float(params.get("margin", 0.02))
    card = adapt(params["strategy"], params["model"], params.get("dataset"), None,
                 device=params.get("device", "auto"), progress=progress, cancel=cancel,
                 options=params.get("options") or None, adapt_images=images,
                 provenance={"history_checks": check_ids, "history": str(store.path)},
                 notes=f"{params['strategy']} on {images.shape[0]} images of drifted checks {check_ids}",
                 guard={"max_clean_drop": margin})
    verdict = verdict_of(card)
    passed = verdict is not None and verdict.passed
    promoted = params.get("promote") == "auto" and passed
    if promoted:
        ModelRegistry().set_active(card.version)
    # The guard (zeal_core.retrain.guard) decides: clean accuracy within the margin and the estimated
    # accuracy on the drifted checks' images not below the parent's.
    action = "promoted" if promoted else ("kept" if passed else "refused")
    follow = ("made active" if promoted else "left for the user to activate" if passed
              else "not made active; the Retrain page asks before activating it")
    reason = f"{verdict.summary if verdict else 'no guard verdict'}; {follow}"
    store.add_event(params["model"], check_ids, action, job_id=None, new_version=card.version, detail=reason)
    return {**card_summary(card), "promoted": promoted, "guard_passed": passed, "reason": reason,
            "check_ids": check_ids}
