"""Embeddings: a tiny random ResNet on a few digits; the two disjoint halves of a split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zeal_core.data import load_dataset
from zeal_core.embed import (
    Embeddings,
    compute_embeddings,
    draw_positions,
    part_positions,
)
from zeal_core.errors import ConfigError
from zeal_core.models import ModelConfig, create_model

CONFIG = ModelConfig(arch="resnet18", num_classes=10, image_size=32, pretrained=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(CONFIG).eval()


def test_compute_embeddings_shapes_and_consistency(digits, tiny_model) -> None:
    images, labels = digits.split("val")
    images, labels = images[:12], labels[:12]
    before = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
    result = compute_embeddings(tiny_model, CONFIG, images, "cpu", labels=labels, batch_size=5)
    assert isinstance(result, Embeddings) and len(result) == 12
    assert result.features.shape == (12, 512) and result.features.dtype == np.float32
    assert result.probs.shape == (12, 10) and result.probs.dtype == np.float32
    assert np.allclose(result.probs.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(result.preds, result.probs.argmax(1))
    assert np.array_equal(result.labels, labels.numpy()) and np.array_equal(result.indices, np.arange(12))
    assert not result.features.flags.writeable
    # Batching does not change the answer, and the model's weights are untouched.
    whole = compute_embeddings(tiny_model, CONFIG, images, "cpu", batch_size=256)
    assert np.allclose(whole.features, result.features, atol=1e-4) and whole.labels is None
    assert all(torch.equal(before[name], tensor) for name, tensor in tiny_model.state_dict().items())
    with pytest.raises(ConfigError, match="uint8"):
        compute_embeddings(tiny_model, CONFIG, images.float(), "cpu")


def test_parts_are_disjoint_halves_and_draws_are_seeded() -> None:
    reference, sample = part_positions(449, "reference"), part_positions(449, "sample")
    assert len(reference) == 225 and len(sample) == 224
    assert not set(reference) & set(sample) and set(reference) | set(sample) == set(range(449))
    first = draw_positions(449, 30, seed=3, part="sample")
    assert np.array_equal(first, draw_positions(449, 30, seed=3, part="sample"))
    assert not np.array_equal(first, draw_positions(449, 30, seed=4, part="sample"))
    assert set(first) <= set(sample)
    with pytest.raises(ConfigError, match="n = 300"):
        draw_positions(449, 300, part="reference")
    with pytest.raises(ConfigError, match="part"):
        part_positions(10, "middle")


def test_subset_keeps_rows_together() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    emb = Embeddings(features=rng.standard_normal((5, 4)).astype(np.float32), probs=probs,
                     preds=probs.argmax(1), labels=np.arange(5) % 3, indices=np.arange(10, 15))
    part = emb.subset([4, 1])
    assert np.array_equal(part.indices, [14, 11]) and np.array_equal(part.features[0], emb.features[4])
    assert part.accuracy == pytest.approx(float((part.preds == part.labels).mean()))
    with pytest.raises(ConfigError, match="rows"):
        Embeddings(features=emb.features, probs=probs[:4], preds=emb.preds, labels=None, indices=emb.indices)
