"""The embedded digits dataset and the uint8 cache round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.conftest import ROOT
from zeal_core.data import load_dataset
from zeal_core.data.dataset import load_cache, save_cache


def test_digits_shape_split_and_fingerprint_are_stable() -> None:
    first, second = load_dataset("digits"), load_dataset("digits")
    assert first.images.shape == (1797, 3, 32, 32) and first.images.dtype == torch.uint8
    assert first.num_classes == 10
    counts = first.class_counts()
    # Stratified: every class is in both splits, about a quarter held out.
    assert all(c["train"] > 0 and c["val"] > 0 for c in counts.values())
    assert 0.2 < first.is_val.float().mean().item() < 0.3
    assert first.fingerprint == second.fingerprint
    assert torch.equal(first.is_val, second.is_val)


def test_cache_round_trip_keeps_content(tmp_path) -> None:
    dataset = load_dataset("digits")
    save_cache(dataset, tmp_path / "digits")
    loaded = load_cache(tmp_path / "digits")
    assert loaded is not None
    assert torch.equal(loaded.images, dataset.images) and torch.equal(loaded.labels, dataset.labels)
    assert loaded.fingerprint == dataset.fingerprint and loaded.class_names == dataset.class_names


def test_damaged_cache_is_treated_as_missing(tmp_path) -> None:
    save_cache(load_dataset("digits"), tmp_path / "digits")
    (tmp_path / "digits.safetensors").write_bytes(b"not a tensor file")
    assert load_cache(tmp_path / "digits") is None


def test_cli_data_info_prints_one_json_object() -> None:
    out = subprocess.run([sys.executable, "-m", "zeal_core", "data", "info", "--dataset", "digits", "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["num_classes"] == 10 and info["num_train"] + info["num_val"] == 1797


def test_cli_unknown_dataset_fails_with_one_line_reason() -> None:
    out = subprocess.run([sys.executable, "-m", "zeal_core", "data", "info", "--dataset", "nope", "--json"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown dataset" in out.stderr and json.loads(out.stdout)["ok"] is False
