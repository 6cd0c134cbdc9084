"""Job kind ``adapt-history``: adapt a model on the stored images of drifted checks (the history policy)."""

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
    from zeal_core.retrain import adapt

    store = HistoryStore(Path(params["history"]))
    check_ids = [int(check_id) for check_id in params["check_ids"]]
    batches = [load_batch(store.path, store.get(check_id).batch_file) for check_id in check_ids]
    images = torch.cat(batches)
    card = adapt(params["strategy"], params["model"], params.get("dataset"), None,
                 device=params.get("device", "auto"), progress=progress, cancel=cancel,
                 options=params.get("options") or None, adapt_images=images,
                 provenance={"history_checks": check_ids, "history": str(store.path)},
                 notes=f"{params['strategy']} on {images.shape[0]} images of drifted checks {check_ids}")
    metrics = card.metrics
    within = metrics["clean_after"] >= metrics["clean_before"] - float(params.get("margin", 0.02))
    promoted = params.get("promote") == "auto" and within
    if promoted:
        ModelRegistry().set_active(card.version)
    action = "promoted" if promoted else "kept"
    reason = (f"clean accuracy {metrics['clean_before']:.1%} -> {metrics['clean_after']:.1%} "
              f"({'within' if within else 'outside'} the {float(params.get('margin', 0.02)):.0%} margin); "
              f"{'made active' if promoted else 'left for the user to activate'}")
    store.add_event(params["model"], check_ids, action, job_id=None, new_version=card.version, detail=reason)
    return {**card_summary(card), "promoted": promoted, "reason": reason, "check_ids": check_ids}
