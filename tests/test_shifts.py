"""The shift bank, class subsets and the model label map: the shared pieces estimators and diagnosis use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import compute_embeddings
from zeal_core.errors import ConfigError, DataError, ModelError
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelCard, label_map
from zeal_core.shifts import bank_specs, build_shift_bank


def _tiny_model(classes: int = 10) -> tuple[torch.nn.Module, ModelConfig]:
    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", num_classes=classes, image_size=32)
    return create_model(config).eval(), config


def test_bank_specs_cover_kinds_and_severities() -> None:
    specs = bank_specs(["gaussian_noise", "fog"], severities=(1, 3))
    assert [spec.text for spec in specs] == ["gaussian_noise:1", "gaussian_noise:3", "fog:1", "fog:3"]
    assert len(bank_specs()) == 19 * 5
    with pytest.raises(ConfigError, match="unknown corruption"):
        bank_specs(["banana"])
    with pytest.raises(ConfigError, match=r"\(0, 5\]"):
        bank_specs(["fog"], severities=(0,))


def test_bank_embeds_every_shift_with_labels_and_logits() -> None:
    model, config = _tiny_model()
    images, labels = load_dataset("digits").split("val")
    images, labels = images[:12], labels[:12]
    bank = build_shift_bank(model, config, images, labels, bank_specs(["gaussian_noise"], (1, 5)), "cpu")
    assert [shifted.spec.text for shifted in bank] == ["gaussian_noise:1", "gaussian_noise:5"]
    clean = compute_embeddings(model, config, images, "cpu", labels=labels)
    for shifted in bank:
        emb = shifted.embeddings
        assert emb.logits.shape == (12, 10) and emb.affected.all()
        np.testing.assert_array_equal(emb.labels, labels.numpy())
        np.testing.assert_allclose(emb.probs, torch.softmax(torch.from_numpy(emb.logits), 1).numpy(),
                                   atol=1e-6)
        assert shifted.corruption == "gaussian_noise"
        assert not np.allclose(emb.features, clean.features)  # the shift changed what the model sees
    assert np.abs(bank[1].embeddings.features - clean.features).mean() > \
        np.abs(bank[0].embeddings.features - clean.features).mean()


def test_without_labels_and_extra_signals() -> None:
    model, config = _tiny_model()
    images, labels = load_dataset("digits").split("val")
    emb = compute_embeddings(model, config, images[:6], "cpu", labels=labels[:6])
    assert emb.without_labels().labels is None and emb.labels is not None
    richer = emb.with_extra(agreement=np.ones(6))
    assert richer.subset([0, 2]).extra["agreement"].shape == (2,)
    with pytest.raises(ConfigError, match="extra"):
        emb.with_extra(bad=np.ones(5))


def test_class_subset_relabels_and_label_map_marks_unseen() -> None:
    digits = load_dataset("digits")
    subset = digits.with_classes(("3", "1", "7"))
    assert subset.class_names == ("3", "1", "7") and set(subset.labels.tolist()) == {0, 1, 2}
    assert int((subset.labels == 0).sum()) == int((digits.labels == 3).sum())
    assert subset.fingerprint != digits.fingerprint and subset.name == "digits"
    with pytest.raises(DataError, match="at least 2 distinct"):
        digits.with_classes(("3", "3"))
    card = ModelCard(version="v1", model_config=ModelConfig(num_classes=3), dataset="digits",
                     dataset_fingerprint="", recipe={}, parent=None, strategy=None, drift_spec=None,
                     metrics={}, created="2026-12-01T00:00:00Z", class_names=("3", "1", "7"))
    mapping = label_map(card, digits.class_names)
    assert mapping[3] == 0 and mapping[1] == 1 and mapping[7] == 2 and mapping[0] == -1
    assert ModelCard.from_json(card.to_json()).class_names == ("3", "1", "7")
    with pytest.raises(ModelError, match="none of which"):
        label_map(card, ("a", "b"))


def test_spec_apply_is_the_bank_corruption() -> None:
    """The bank corrupts with DriftSpec.apply, so its shifts are the ones the lab applies."""
    images = load_dataset("digits").split("val")[0][:4]
    spec = DriftSpec.parse("fog:2")
    assert torch.equal(spec.apply(images, seed=3), DriftSpec.parse("fog:2").apply(images, seed=3))
