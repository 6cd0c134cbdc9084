"""Job kind ``retrain``: adapt a model to a simulated drift with a strategy (the Retrain button)."""

from __future__ import annotations

from typing import Any

from zeal_core.jobs.kinds import card_summary
from zeal_core.jobs.params import RetrainParams
from zeal_core.progress import CancelToken, ProgressCallback


def run_retrain(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    """``zeal_core.retrain.adapt`` with the job's params.

    ``activate`` makes the result active only when the guard passed it (``guard`` holds its margins, e.g.
    ``{"max_clean_drop": 0.02}``); a refused version stays saved for the user to inspect.
    """
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt, verdict_of

    job = RetrainParams(**params)  # checked when the job was submitted
    card = adapt(job.strategy, job.model, job.dataset, job.drift, device=job.device, progress=progress,
                 cancel=cancel, options=job.options or None, guard=job.guard or None)
    verdict = verdict_of(card)
    activated = job.activate and verdict is not None and verdict.passed
    if activated:
        ModelRegistry().set_active(card.version)
    return {**card_summary(card), "activated": activated, "guard": verdict.summary if verdict else None}
