"""Job kind ``retrain``: adapt a model to a simulated drift with a strategy (the Retrain button)."""

from __future__ import annotations

from typing import Any

from zeal_core.jobs.kinds import card_summary
from zeal_core.progress import CancelToken, ProgressCallback


def run_retrain(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    """``zeal_core.retrain.adapt`` with the job's params; optionally make the result active."""
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt

    card = adapt(params["strategy"], params["model"], params.get("dataset"), params["drift"],
                 device=params.get("device", "auto"), progress=progress, cancel=cancel,
                 options=params.get("options") or None)
    if params.get("activate"):
        ModelRegistry().set_active(card.version)
    return card_summary(card)
