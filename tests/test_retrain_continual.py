"""Continual adaptation: a stream that drifts and turns clean again, collapse resets, the monitor's mode, and
the new strategy in every registry-driven place."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_retrain import save_tiny_parent, tiny_parent
from zeal_core.cli import main
from zeal_core.corruptions import apply
from zeal_core.data import load_dataset
from zeal_core.errors import ConfigError
from zeal_core.models import create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.monitor import MonitorConfig, simulate
from zeal_core.retrain import (
    ContinualAdapter,
    ContinualConfig,
    continual_strategies,
    list_strategies,
    unlabeled_strategies,
)
from zeal_core.retrain.continual import effective_classes

BATCH = 64


def parent_model() -> tuple[torch.nn.Module, object]:
    state, config, _ = tiny_parent()
    model = create_model(config)
    model.load_state_dict(state)
    return model.eval(), config


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@pytest.mark.parametrize("strategy", ["roid", "tent"])
def test_a_stream_that_turns_clean_again_returns_to_the_source_clean_accuracy(strategy: str) -> None:
    model, config = parent_model()
    images, labels = load_dataset("digits").split("train")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    adapter = ContinualAdapter(model, config, ContinualConfig(strategy=strategy), "cpu")
    drifted = apply(images[:8 * BATCH], "gaussian_noise", 5, seed=0)
    gains = []
    for index in range(8):  # eight drifted batches: the adapted model beats the source on them
        part = slice(index * BATCH, (index + 1) * BATCH)
        step = adapter.step(drifted[part])
        gains.append(accuracy(step.logits, labels[part]) - accuracy(step.source_logits, labels[part]))
    assert sum(gains[2:]) / 6 > 0.03
    clean_gaps = []
    for index in range(8, 14):  # then clean again
        part = slice(index * BATCH, (index + 1) * BATCH)
        step = adapter.step(images[part])
        clean_gaps.append(accuracy(step.source_logits, labels[part]) - accuracy(step.logits, labels[part]))
    # Within a few batches the adapted model is back at the source's clean accuracy (2 points, averaged over
    # the batches after the third, to see past the noise of 64 images).
    assert sum(clean_gaps[3:]) / 3 <= 0.02, clean_gaps


def test_the_shift_gate_serves_clean_batches_with_the_source_and_adapts_to_drifted_ones() -> None:
    model, config = parent_model()
    train, _ = load_dataset("digits").split("train")
    # The reference and the stream: disjoint draws from the same clean images (as the monitor's halves).
    order = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))
    reference, images = train[order[:512]], train[order[512:]]
    adapter = ContinualAdapter(model, config, ContinualConfig(strategy="roid"), "cpu",
                               reference_images=reference)
    clean = [adapter.step(images[i * 32:(i + 1) * 32]) for i in range(4)]
    noisy = [adapter.step(apply(images[i * 32:(i + 1) * 32], "gaussian_noise", 5, seed=i))
             for i in range(4, 8)]
    again = [adapter.step(images[i * 32:(i + 1) * 32]) for i in range(8, 12)]
    # Clean batches: the source serves them (about 1 in 20 clean batches scores above the threshold).
    assert sum(step.gated for step in clean + again) >= 6
    assert not any(step.gated for step in noisy)  # drifted ones are adapted to
    assert all(torch.equal(step.logits, step.source_logits) for step in clean + again if step.gated)
    assert min(step.shift_score for step in noisy) > max(step.shift_score for step in clean)
    assert adapter.adapter.steps == sum(not step.gated for step in clean + noisy + again)  # only those


def test_a_collapse_sends_the_adapter_back_to_the_source() -> None:
    model, config = parent_model()
    images, _ = load_dataset("digits").split("val")
    adapter = ContinualAdapter(model, config, ContinualConfig(strategy="tent", collapse_batches=2), "cpu")
    adapter.adapter.model.get_classifier().bias.data[3] = 1e4  # every image now predicted as class 3
    steps = [adapter.step(images[i * 32:(i + 1) * 32]) for i in range(3)]
    assert [step.effective_classes for step in steps[:2]] == [1.0, 1.0]
    assert [step.reset for step in steps] == [False, True, False] and adapter.resets == 1
    assert steps[2].effective_classes > 3  # the source's weights again
    assert effective_classes(torch.eye(4), 4) == pytest.approx(4.0)


def test_the_clean_check_resets_an_adapter_that_forgot() -> None:
    model, config = parent_model()
    train, train_labels = load_dataset("digits").split("train")
    images, _ = load_dataset("digits").split("val")
    settings = ContinualConfig(strategy="roid", gate=False, reset_on_collapse=False, clean_check_every=2)
    adapter = ContinualAdapter(model, config, settings, "cpu", reference_images=train[:512],
                               reference_labels=train_labels[:512])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # forgetting that still predicts every class: scrambled normalisation scales
        for parameter in adapter.adapter.trainable:
            parameter.mul_(torch.rand(parameter.shape, generator=generator) * 2)
    steps = [adapter.step(apply(images[i * 32:(i + 1) * 32], "gaussian_noise", 5, seed=i)) for i in range(4)]
    assert steps[1].reset and adapter.resets == 1  # the first check (after two adapted batches) caught it
    assert not adapter.forgot()  # the source's weights again


def test_continual_needs_an_online_strategy() -> None:
    assert set(continual_strategies()) == {"bn-adapt", "tent", "roid"}
    with pytest.raises(ConfigError, match="continual strategy 'finetune'"):
        ContinualConfig(strategy="finetune")
    with pytest.raises(ConfigError, match="unknown setting"):
        ContinualConfig(strategy="roid", options={"nope": 1})
    with pytest.raises(ConfigError, match="continual adaptation needs"):
        MonitorConfig(strategy="finetune", continual=True)


@pytest.fixture(scope="module")
def parent_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    return registry, save_tiny_parent(registry)


def test_the_monitor_adapts_continually_over_a_recurring_drift(parent_registry) -> None:
    registry, parent = parent_registry
    schedule = "clean*2,gaussian_noise:5*4,clean*2,gaussian_noise:5*4"
    config = MonitorConfig(batch_size=64, reference_size=128, strategy="roid", continual=True, seed=0,
                           record_history=False)
    result = simulate(parent, "digits", schedule, config, device="cpu", registry=registry)
    assert not result.retrains and all(b.active_version == parent for b in result.batches)
    drifted = [b for b in result.batches if b.drift_spec != "clean"]
    assert len(drifted) == 8 and all(b.estimated_accuracy is None for b in result.batches)
    with_policy = sum(b.accuracy_with_policy for b in drifted) / 8
    without = sum(b.accuracy_without_policy for b in drifted) / 8
    assert with_policy > without + 0.03
    assert "adapter_resets" in result.summary and json.dumps(result.to_dict())


def test_the_monitor_keeps_serving_the_parent_when_the_guard_refuses(parent_registry) -> None:
    registry, parent = parent_registry
    config = MonitorConfig(batch_size=32, reference_size=128, alarms_to_retrain=2, window=3, cooldown=20,
                           strategy="bn-adapt", seed=0, record_history=False)
    result = simulate(parent, "digits", "clean*3,gaussian_noise:5*6", config, device="cpu", registry=registry)
    assert len(result.retrains) == 1 and result.summary["retrains_refused"] == 1
    event = result.retrains[0]
    assert not event.deployed and event.guard.startswith("guard refused")
    assert registry.card(event.version).metrics["guard_passed"] is False  # saved, marked
    assert all(b.active_version == parent for b in result.batches)


def test_roid_is_in_every_registry_driven_place(parent_registry, monkeypatch, capsys) -> None:
    from zeal_core.history import HistoryPolicy

    assert "roid" in list_strategies() and "roid" in unlabeled_strategies()
    assert HistoryPolicy(strategy="roid").strategy == "roid"  # the history's retrain policy
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    assert "roid" in capsys.readouterr().out  # the command line lists it with its description
    registry, parent = parent_registry
    monkeypatch.setenv("ZEAL_MODELS_DIR", str(registry.root))
    code = main(["monitor", "--model", parent, "--schedule", "clean*1,gaussian_noise:5*2", "--policy", "roid",
                 "--continual", "--batch-size", "32", "--reference-size", "64", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["strategy"] == "roid" and out["config"]["continual"] is True
