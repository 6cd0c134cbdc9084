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
from zeal_core.jobs.params import AdaptHistoryParams
from zeal_core.progress import CancelToken, ProgressCallback


def run_adapt_history(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken
                      ) -> dict[str, Any]:
    """Adapt on the checks' images, then promote the result only as the policy allows."""
    from zeal_core.history.batches import load_batch
    from zeal_core.history.store import HistoryStore
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt, verdict_of

    job = AdaptHistoryParams(**params)  # checked when the job was submitted
    store = HistoryStore(Path(job.history))
    check_ids = [int(check_id) for check_id in job.check_ids]
    batches = [load_batch(store.path, store.get(check_id).batch_file) for check_id in check_ids]
    images = torch.cat(batches)
    card = adapt(job.strategy, job.model, job.dataset, None, device=job.device, progress=progress,
                 cancel=cancel, options=job.options or None, adapt_images=images,
                 provenance={"history_checks": check_ids, "history": str(store.path)},
                 notes=f"{job.strategy} on {images.shape[0]} images of drifted checks {check_ids}",
                 guard={"max_clean_drop": job.margin})
    verdict = verdict_of(card)
    passed = verdict is not None and verdict.passed
    promoted = job.promote == "auto" and passed
    if promoted:
        ModelRegistry().set_active(card.version)
    # The guard (zeal_core.retrain.guard) decides: clean accuracy within the margin and the estimated
    # accuracy on the drifted checks' images not below the parent's.
    action = "promoted" if promoted else ("kept" if passed else "refused")
    follow = ("made active" if promoted else "left for the user to activate" if passed
              else "not made active; the Retrain page asks before activating it")
    reason = f"{verdict.summary if verdict else 'no guard verdict'}; {follow}"
    store.add_event(job.model, check_ids, action, job_id=None, new_version=card.version, detail=reason)
    return {**card_summary(card), "promoted": promoted, "guard_passed": passed, "reason": reason,
            "check_ids": check_ids}
