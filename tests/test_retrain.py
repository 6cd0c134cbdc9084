"""Retraining strategies on digits: each lifts drifted accuracy over its parent, with lineage in the card.

The parent is a tiny timm ResNet (``test_resnet``, BatchNorm like ResNet-18) trained for a few epochs at
16 px, once per test process (``tiny_parent``), so the whole file stays fast on two CPU cores.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch

from zeal_core.cli import main
from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.errors import ConfigError, ModelError
from zeal_core.evaluate import evaluate
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.retrain import (
    EVAL_SEED,
    adapt,
    batchnorm_layers,
    list_strategies,
    recompute_bn_statistics,
    recovered_share,
    strategy_info,
)

# gaussian_noise at severity 5 costs the tiny 16 px parent a clear share of its accuracy, and every strategy
# wins much of it back (severity 3 barely hurts at 16 px: the resize averages the noise away).
DRIFT = "gaussian_noise:5"
# Small settings per strategy so that each runs in seconds; the defaults are for real use.
TEST_OPTIONS = {"bn-adapt": {}, "tent": {}, "roid": {}, "finetune": {"epochs": 1}, "retrain": {"epochs": 2}}


@functools.cache
def tiny_parent() -> tuple[dict[str, torch.Tensor], ModelConfig, float]:
    """Train the shared parent once per process: (weights, config, clean val accuracy)."""
    from zeal_core.train import TrainConfig, train_model

    config = TrainConfig(arch="test_resnet", epochs=3, batch_size=64, lr=0.1, image_size=16,
                         augmentations=("crop",), crop_scale=(0.6, 1.0), eval_each_epoch=False, seed=0)
    result = train_model(load_dataset("digits"), config, device="cpu")
    state = {name: tensor.detach().clone() for name, tensor in result.model.state_dict().items()}
    return state, result.model_config, float(result.metrics["val_accuracy"])


def save_tiny_parent(registry: ModelRegistry) -> str:
    """Store the shared parent in ``registry``; returns its version."""
    state, model_config, accuracy = tiny_parent()
    model = create_model(model_config)
    model.load_state_dict(state)
    dataset = load_dataset("digits")
    card = registry.save(model, model_config=model_config, dataset="digits",
                         dataset_fingerprint=dataset.fingerprint, recipe={"test": "tiny parent"},
                         metrics={"val_accuracy": accuracy})
    return card.version


@pytest.fixture(scope="module")
def parent_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    return registry, save_tiny_parent(registry)


def test_registry_lists_every_strategy_with_a_description() -> None:
    assert list_strategies() == ["bn-adapt", "tent", "roid", "finetune", "retrain"]
    for name in list_strategies():
        info = strategy_info(name)
        assert info.description and info.needs_labels == (name in ("finetune", "retrain"))
    with pytest.raises(ConfigError, match="unknown strategy"):
        strategy_info("magic")


@pytest.mark.parametrize("name", ["bn-adapt", "tent", "roid", "finetune", "retrain"])
def test_strategy_lifts_drifted_accuracy_and_records_lineage(parent_registry, name: str) -> None:
    registry, parent = parent_registry
    card = adapt(name, parent, "digits", DRIFT, device="cpu", registry=registry, options=TEST_OPTIONS[name])
    metrics = card.metrics
    # The drift must really hurt the parent for the comparison to mean anything.
    assert metrics["clean_before"] - metrics["drifted_before"] > 0.05
    assert metrics["drifted_after"] > metrics["drifted_before"] + 0.03
    assert card.parent == parent and card.strategy == name and card.drift_spec == DRIFT
    assert metrics["recovered_share"] == pytest.approx(
        (metrics["drifted_after"] - metrics["drifted_before"])
        / (metrics["clean_before"] - metrics["drifted_before"]))
    assert metrics["seconds"] > 0 and metrics["n_val"] == int(load_dataset("digits").is_val.sum())
    if name == "finetune":
        # The guard: clean accuracy never more than 2 points below the parent's.
        assert metrics["clean_after"] >= metrics["clean_before"] - 0.02 - 1e-9
        assert metrics["details"]["guard_passed"] is True
    # The saved version (weights and BatchNorm buffers) scores what its card says.
    model, loaded = registry.load(card.version)
    val_images, val_labels = load_dataset("digits").split("val")
    drifted = DriftSpec.parse(DRIFT).apply(val_images, seed=EVAL_SEED)
    rescored = evaluate(model, loaded.model_config, drifted, val_labels, "cpu").accuracy
    assert rescored == pytest.approx(metrics["drifted_after"], abs=1e-6)
    assert registry.card(parent).version == parent  # the parent is untouched


def test_bn_statistics_follow_the_adaptation_images(parent_registry) -> None:
    registry, parent = parent_registry
    model, card = registry.load(parent)
    first = batchnorm_layers(model)[0]
    momentum = first.momentum
    clean_train, _ = load_dataset("digits").split("train")
    dark = (clean_train // 4).to(torch.uint8)  # a quarter of the brightness: the first layer's mean must move
    before = first.running_mean.clone()
    used = recompute_bn_statistics(model, card.model_config, dark, torch.device("cpu"), batch_size=256)
    assert used == clean_train.shape[0]
    assert not torch.allclose(first.running_mean, before)
    assert first.momentum == momentum and not model.training  # restored, eval mode
    # Keeping all of the source statistics (weight 1) leaves them unchanged.
    again = first.running_mean.clone()
    recompute_bn_statistics(model, card.model_config, clean_train, torch.device("cpu"), source_weight=1.0)
    assert torch.allclose(first.running_mean, again)


def test_no_drift_means_no_recovery_share() -> None:
    assert recovered_share(0.9, 0.9, 0.95) is None
    assert recovered_share(0.9, 0.5, 0.7) == pytest.approx(0.5)


def test_bad_options_and_versions_are_refused(parent_registry) -> None:
    registry, parent = parent_registry
    with pytest.raises(ConfigError, match=r"strategy 'bn-adapt': unknown setting.*epochz"):
        adapt("bn-adapt", parent, "digits", DRIFT, device="cpu", registry=registry, options={"epochz": 1})
    with pytest.raises(ModelError):
        adapt("bn-adapt", "no-such-version", "digits", DRIFT, device="cpu", registry=registry)
    with pytest.raises(ConfigError, match="clean"):
        adapt("finetune", parent, "digits", "clean", device="cpu", registry=registry,
              options={"epochs": 1})


def test_cli_retrain_prints_before_and_after(parent_registry, monkeypatch, capsys) -> None:
    registry, parent = parent_registry
    monkeypatch.setenv("ZEAL_MODELS_DIR", str(registry.root))
    code = main(["retrain", "--model", parent, "--strategy", "bn-adapt", "--drift", DRIFT, "--device", "cpu",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parent"] == parent and result["strategy"] == "bn-adapt"
    assert result["drifted_after"] > result["drifted_before"]
    assert registry.card(result["version"]).parent == parent
    assert main(["retrain", "--model", parent, "--drift", "nonsense:3", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_images_for_a_labelled_strategy_are_a_config_error_listing_the_unlabeled_ones(
        parent_registry) -> None:
    """The path that once indexed the strategy registry with [] (a TypeError) now says what to use."""
    registry, parent = parent_registry
    images = load_dataset("digits").split("train")[0][:16]
    with pytest.raises(ConfigError, match=r"trains on labelled data.*\['bn-adapt', 'tent', 'roid'\]"):
        adapt("finetune", parent, None, DRIFT, device="cpu", registry=registry, adapt_images=images)
    with pytest.raises(ConfigError, match="needs a drift spec"):
        adapt("finetune", parent, None, None, device="cpu", registry=registry)


def test_real_batches_without_a_drift_spec_adapt_and_record_their_provenance(parent_registry) -> None:
    """Production batches have no spec and no labels: bn-adapt runs on them and the card says so."""
    registry, parent = parent_registry
    images = DriftSpec.parse(DRIFT).apply(load_dataset("digits").split("train")[0][:96], seed=5)
    card = adapt("bn-adapt", parent, None, None, device="cpu", registry=registry, adapt_images=images,
                 provenance={"history_checks": [3, 4, 7]})
    assert card.drift_spec is None and card.metrics["drifted_before"] is None
    assert card.metrics["recovered_share"] is None and card.metrics["details"]["adapt_images"] == 96
    assert card.recipe["provenance"] == {"history_checks": [3, 4, 7]}
    assert 0.0 <= card.metrics["clean_after"] <= 1.0 and card.parent == parent
