"""The shift bank of a fitted reference, kept on disk: building it is the slow part of its warm-up.

A bank is ``bank_n`` reference images under every registered ImageNet-C corruption at severities 1-5
(``zeal_core.shifts``), embedded by the model: 95 forward passes over the same images. On a laptop CPU
that is a minute for the digits and several for Imagenette, so a built bank is saved next to the lab's
state (one ``.npz`` per model weights, dataset, image positions, specs and seed) and read back by the next
process: the command line and a restarted app pay for it once per model.

The file holds only arrays (``numpy.load(allow_pickle=False)``), never a pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zeal_core.corruptions import DriftSpec
from zeal_core.embed import Embeddings
from zeal_core.fileio import atomic_write_bytes
from zeal_core.shifts import ShiftedSet, replace_spec

BANK_FORMAT = 1  # bumped when the file layout changes (older files are then rebuilt)
_FIELDS = ("features", "logits", "probs", "preds", "labels", "indices")


def bank_key(weights_sha256: str, dataset_fingerprint: str, positions: np.ndarray,
             specs: Sequence[DriftSpec], seed: int) -> str:
    """A short hash naming one bank: the same weights, images, specs and seed give the same bank."""
    digest = hashlib.sha256()
    digest.update(json.dumps([BANK_FORMAT, weights_sha256, dataset_fingerprint, [spec.text for spec in specs],
                              int(seed)]).encode())
    digest.update(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
    return digest.hexdigest()[:20]


def embeddings_arrays(embeddings: Sequence[Embeddings]) -> dict[str, np.ndarray]:
    """Arrays ``{number}_{field}`` of several ``Embeddings`` (what ``embeddings_from_arrays`` reads back)."""
    return {f"{number}_{name}": np.asarray(getattr(embedded, name))
            for number, embedded in enumerate(embeddings) for name in _FIELDS
            if getattr(embedded, name) is not None}


def embeddings_from_arrays(stored: Any, count: int) -> list[Embeddings]:
    """The ``count`` ``Embeddings`` of ``embeddings_arrays`` from an open ``.npz`` (or any mapping)."""
    embedded = []
    for number in range(count):
        values = {name: stored.get(f"{number}_{name}") for name in _FIELDS}
        embedded.append(Embeddings(features=values["features"], probs=values["probs"],
                                   preds=values["preds"], labels=values["labels"], indices=values["indices"],
                                   logits=values["logits"]))
    return embedded


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` (``.npz``, written atomically so a reader never sees half a file)."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_bank(path: Path, bank: Sequence[ShiftedSet]) -> Path:
    """Write ``bank`` to ``path`` (``.npz``, written atomically so a reader never sees half a file)."""
    return save_arrays(path, {"specs": np.array([shifted.spec.text for shifted in bank]),
                              **embeddings_arrays([shifted.embeddings for shifted in bank])})


def load_bank(path: Path) -> tuple[ShiftedSet, ...] | None:
    """The bank saved at ``path``, or None when there is none or it cannot be read (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            texts = [str(text) for text in stored["specs"]]
            bank = []
            for text, embedded in zip(texts, embeddings_from_arrays(stored, len(texts)), strict=True):
                spec = DriftSpec.parse(text)
                bank.append(ShiftedSet(spec=spec, embeddings=replace_spec(embedded, spec)))
    except (OSError, KeyError, ValueError):
        return None  # a damaged or older file: the caller rebuilds the bank and overwrites it
    return tuple(bank)
