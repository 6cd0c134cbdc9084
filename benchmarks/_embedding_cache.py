"""One on-disk cache of the embeddings benchmarks compute again and again (clean and shifted held-out images).

``failing-loudly``, ``detectors``, ``estimate`` and ``diagnose`` each embed the same model's validation
images, clean and under many shifts: minutes of forward passes per process. An entry is one list of
``Embeddings`` keyed by everything that decides them:

- the model's weights (``weights_sha256`` of its card) and the device type (a GPU embeds in bf16),
- the dataset's content fingerprint and the image positions embedded,
- the shift texts (``DriftSpec`` text, or a benchmark's own text such as ``ext/rain:3``) and the seed.

So a second run of the same benchmark reads the entry instead of embedding, and any change to weights,
data, positions, shifts or seed misses and embeds afresh. Files are arrays only (``.npz``, read with
``allow_pickle=False``, the layout of ``zeal_core.reference.bank``) plus a JSON file that states the key;
a damaged entry is recomputed and overwritten. The folder is an argument (``--cache DIR`` of every
benchmark), by default ``bench_embeddings`` in the state folder (``ZEAL_STATE_DIR``), never an environment
write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1  # bumped when the entry layout changes (older entries are then recomputed)
FOLDER = "bench_embeddings"  # under the state folder when no --cache is given


def cache_folder(cache: Path | str | None) -> Path:
    """The folder ``--cache`` names, or ``<state>/bench_embeddings``."""
    from zeal_core import paths

    return Path(cache) / FOLDER if cache else paths.state_dir() / FOLDER


@dataclass
class EmbeddingCache:
    """Embeddings of one model on one dataset, on disk (see the module docstring)."""

    folder: Path  # where the entries live (created on the first write)
    weights_sha256: str  # the model's weights, as its card states them
    dataset_fingerprint: str  # the content of the images embedded
    device_type: str = "cpu"  # "cpu" or "cuda": a GPU embeds in bf16, so its numbers differ slightly
    hits: int = field(default=0)  # entries read back in this process
    misses: int = field(default=0)  # entries computed in this process

    @classmethod
    def for_model(cls, card: Any, dataset: Any, device: Any, cache: Path | str | None = None
                  ) -> EmbeddingCache:
        """The cache of ``card``'s model on ``dataset``, in ``cache`` (``--cache``; default: state folder)."""
        return cls(folder=cache_folder(cache), weights_sha256=card.weights_sha256 or card.version,
                   dataset_fingerprint=dataset.fingerprint, device_type=getattr(device, "type", str(device)))

    def key(self, positions: np.ndarray, texts: Sequence[str], seed: int) -> str:
        """A short hash naming one entry."""
        digest = hashlib.sha256()
        digest.update(json.dumps([CACHE_FORMAT, self.weights_sha256, self.dataset_fingerprint,
                                  self.device_type, list(texts), int(seed)]).encode())
        digest.update(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
        return digest.hexdigest()[:24]

    def embeddings(self, positions: np.ndarray, texts: Sequence[str], seed: int,
                   make: Callable[[], Sequence[Any]]) -> list[Any]:
        """The ``Embeddings`` of ``texts`` (one per text) for the images at ``positions``: read back, or
        ``make()`` and saved.

        Args:
            positions: Positions of the embedded images in their split.
            texts: What was done to them, one text per returned ``Embeddings`` ("clean" for nothing).
            seed: The seed the shifts were drawn with.
            make: Computes the list when the entry is missing or unreadable.
        """
        key = self.key(positions, texts, seed)
        stored = self._read(key, len(texts))
        if stored is not None:
            self.hits += 1
            return stored
        self.misses += 1
        made = list(make())
        self._write(key, made, {"format": CACHE_FORMAT, "weights_sha256": self.weights_sha256,
                                "dataset_fingerprint": self.dataset_fingerprint, "device": self.device_type,
                                "texts": list(texts), "seed": int(seed), "images": len(positions)})
        return made

    def one(self, positions: np.ndarray, text: str, seed: int, make: Callable[[], Any]) -> Any:
        """The ``Embeddings`` of one text (``embeddings`` for a single entry)."""
        return self.embeddings(positions, [text], seed, lambda: [make()])[0]

    def _read(self, key: str, count: int) -> list[Any] | None:
        from zeal_core.reference.bank import embeddings_from_arrays

        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return embeddings_from_arrays(stored, count)
        except (OSError, KeyError, ValueError):
            return None  # damaged or of an older layout: recomputed and overwritten

    def _write(self, key: str, made: Sequence[Any], described: dict[str, Any]) -> None:
        from zeal_core.fileio import atomic_write_text
        from zeal_core.reference.bank import embeddings_arrays, save_arrays

        save_arrays(self.folder / f"{key}.npz", embeddings_arrays(made))
        atomic_write_text(self.folder / f"{key}.json", json.dumps(described, indent=1) + "\n")

    def summary(self) -> dict[str, Any]:
        """What the cache did in this process, for a result's ``info``."""
        return {"folder": str(self.folder), "entries_read": self.hits, "entries_computed": self.misses}
