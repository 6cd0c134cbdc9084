"""The one cache of fitted references in a process (the app's sessions, the command line, the monitor).

A reference is loaded or fitted once per (models folder, version, its weights, data folder, dataset,
settings, device) and then shared read-only; while one caller fits it, others asking for the same key wait
for that fit instead of starting their own. Across processes the fitted parts are kept on disk next to the
model version (``zeal_core.reference.persist``). Simulated checks are cached inside each reference.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from zeal_core.device import resolve_device
from zeal_core.paths import data_dir
from zeal_core.progress import ProgressCallback
from zeal_core.reference.config import ReferenceConfig
from zeal_core.reference.fit import fit_reference
from zeal_core.reference.fitted import FittedReference

KEEP = 4  # fitted references kept (each holds its split's embeddings and thumbnails of recent checks)

_FITTED: OrderedDict[tuple, FittedReference] = OrderedDict()
_FITTING: dict[tuple, threading.Lock] = {}
_LOCK = threading.Lock()


def get_reference(version: str, dataset: str | None = None, config: ReferenceConfig | None = None, *,
                  device: str | torch.device = "auto", registry: Any = None,
                  progress: ProgressCallback | None = None,
                  settings: dict[str, Any] | None = None) -> FittedReference:
    """The fitted reference for these settings: from the cache, or loaded or fitted now (``fit_reference``).

    Args:
        version: A model version, or "active"/"latest".
        dataset: Dataset name; default the model's.
        config: Reference size, seed, alpha, detectors.
        device: Where the model runs.
        registry: The model registry; default the one in ``models_dir()``.
        progress: Receives ``reference`` events while fitting.
        settings: The check settings reports name (a check profile's description).
    """
    from zeal_core.models.registry import ModelRegistry

    config = config or ReferenceConfig()
    registry = registry if registry is not None else ModelRegistry()
    resolved = registry.resolve(version)
    card = registry.card(resolved)
    key = (str(registry.root), resolved, card.weights_sha256, str(data_dir()), dataset or card.dataset,
           config.cache_key(), str(resolve_device(device)), repr(sorted((settings or {}).items())))
    with _LOCK:
        if key in _FITTED:
            _FITTED.move_to_end(key)
            return _FITTED[key]
        fitting = _FITTING.setdefault(key, threading.Lock())
    with fitting:  # one fit per key; the others wait here and then find it cached
        with _LOCK:
            if key in _FITTED:
                return _FITTED[key]
        fitted = fit_reference(resolved, dataset, config, device=device, registry=registry, progress=progress,
                               settings=settings)
        with _LOCK:
            _FITTED[key] = fitted
            _FITTING.pop(key, None)
            while len(_FITTED) > KEEP:
                _FITTED.popitem(last=False)
    return fitted


def forget_references() -> None:
    """Drop every cached reference (after a model version is deleted or replaced, and in tests)."""
    with _LOCK:
        _FITTED.clear()
