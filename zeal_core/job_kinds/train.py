"""Job kind ``train``: train a model on a dataset and register it."""

from __future__ import annotations

from typing import Any

from zeal_core.config import override
from zeal_core.jobs.kinds import card_summary
from zeal_core.progress import CancelToken, ProgressCallback


def run_train(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    """Train ``default_config(dataset)`` with the other params as strict TrainConfig overrides."""
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.train import default_config, train_and_register

    options = dict(params)
    dataset_name = options.pop("dataset", "digits")
    device = options.pop("device", "auto")
    activate = bool(options.pop("activate", False))
    classes = options.pop("classes", None)
    config = override(default_config(dataset_name), options, "train job")
    card = train_and_register(dataset_name, config, device=device, progress=progress, cancel=cancel,
                              classes=classes)
    if activate:
        ModelRegistry().set_active(card.version)
    return card_summary(card)
