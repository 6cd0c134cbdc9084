"""The benchmarks' embedding cache (issue 32): a second run reads back what the first embedded, and any
change to weights, data, positions, shift or seed embeds afresh."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks._embedding_cache import EmbeddingCache, cache_folder
from tests.test_reliability_edges import save_random_model
from zeal_core.models.registry import ModelRegistry


def _store(tmp_path: Path, weights: str = "w" * 64, data: str = "d" * 64) -> EmbeddingCache:
    return EmbeddingCache(folder=tmp_path / "cache", weights_sha256=weights, dataset_fingerprint=data)


def _embedded(rows: int, offset: float = 0.0):
    from zeal_core.embed import Embeddings

    logits = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + offset
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Embeddings(features=np.full((rows, 4), offset, np.float32), probs=probs.astype(np.float32),
                      preds=logits.argmax(1), labels=np.arange(rows) % 3, indices=np.arange(rows),
                      logits=logits)


def test_an_entry_is_read_back_exactly_and_any_key_part_misses(tmp_path: Path) -> None:
    store, calls = _store(tmp_path), []
    positions = np.array([3, 1, 4])

    def make(offset: float = 1.5):
        calls.append(offset)
        return _embedded(3, offset)

    first = store.one(positions, "fog:3", 7, make)
    again = store.one(positions, "fog:3", 7, make)
    assert calls == [1.5] and (store.hits, store.misses) == (1, 1)
    for name in ("features", "probs", "preds", "labels", "indices", "logits"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    changes = {"positions": (store, positions[:2], "fog:3", 7), "shift": (store, positions, "fog:4", 7),
               "seed": (store, positions, "fog:3", 8),
               "weights": (_store(tmp_path, weights="x" * 64), positions, "fog:3", 7),
               "data": (_store(tmp_path, data="y" * 64), positions, "fog:3", 7)}
    for name, (other, rows, text, seed) in changes.items():
        before = len(calls)
        other.one(rows, text, seed, lambda rows=rows, name=name: calls.append(name) or _embedded(len(rows)))
        assert len(calls) > before, f"a changed {name} must embed afresh"
    described = [json.loads(path.read_text()) for path in (tmp_path / "cache").glob("*.json")]
    assert {tuple(entry["texts"]) for entry in described} >= {("fog:3",), ("fog:4",)}
    assert not list((tmp_path / "cache").glob("*.pkl")), "arrays and JSON only"


def test_a_damaged_entry_is_recomputed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    positions = np.arange(2)
    store.one(positions, "clean", 0, lambda: _embedded(2))
    entry = next((tmp_path / "cache").glob("*.npz"))
    entry.write_bytes(b"not an npz")
    fresh = store.one(positions, "clean", 0, lambda: _embedded(2, offset=2.0))
    assert store.misses == 2 and float(fresh.features[0, 0]) == 2.0
    assert cache_folder(tmp_path) == tmp_path / "bench_embeddings"


@pytest.mark.parametrize("module", ["failing_loudly", "detectors"])
def test_a_second_benchmark_run_skips_the_embedding(tmp_path: Path, module: str) -> None:
    """A tiny digits model: the second run reads every embedding back and gives the same features."""
    from benchmarks import detectors, failing_loudly
    from zeal_core.corruptions import DriftSpec

    version = save_random_model(ModelRegistry())
    cache = tmp_path / "bench_cache"
    runs = []
    for _ in range(2):
        if module == "failing_loudly":
            clean, shifted, _, info = failing_loudly.shift_embeddings(
                "digits", version, [DriftSpec.parse("fog:3"), DriftSpec.parse("gaussian_noise:2@0.5")], "cpu",
                None, max_images=24, seed=0, cache=cache)
            runs.append((clean.features, *(value.features for value in shifted.values()), info))
        else:
            features, info = detectors._model_features("digits", version, [("fog", 3.0)], "cpu", None,
                                                       cache=cache)
            runs.append((*(value.features for value in features.values()), info))
    first, second = runs
    computed = first[-1]["embedding_cache"]["entries_computed"]
    assert computed >= 2 and first[-1]["embedding_cache"]["entries_read"] == 0
    assert second[-1]["embedding_cache"] == {**first[-1]["embedding_cache"], "entries_read": computed,
                                             "entries_computed": 0}
    for old, new in zip(first[:-1], second[:-1], strict=True):
        assert np.array_equal(old, new)


def test_every_benchmark_has_the_cache_option() -> None:
    from benchmarks._actions import build_parser

    parser = build_parser()
    actions = next(action for action in parser._actions if action.dest == "action")
    for name, sub in actions.choices.items():
        assert sub.parse_args(["--cache", "c"]).cache == Path("c"), name
    assert isinstance(argparse.Namespace(cache=None).cache, type(None))
