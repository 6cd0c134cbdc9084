"""Training engine, batch augmentation and evaluation, on tiny seeded subsets of the digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tests.conftest import ROOT
from zeal_core.augment import augment_batch
from zeal_core.data import ImageDataset, load_dataset
from zeal_core.data.dataset import content_fingerprint
from zeal_core.errors import Cancelled, ConfigError
from zeal_core.evaluate import evaluate, predict_logits, summarize_predictions
from zeal_core.models.factory import ModelConfig, build_model, prepare_batch
from zeal_core.progress import CancelToken, ProgressEvent
from zeal_core.train import TrainConfig, _BatchCorrupter, train_model

# Small and quick: 32 px digits seen at 16 px, 8 steps per epoch on 64 images.
TINY = TrainConfig(epochs=3, batch_size=8, lr=0.02, image_size=16, augmentations=(), log_interval_s=0.0)


def tiny_digits(n_train: int = 64, n_val: int = 32, seed: int = 0) -> ImageDataset:
    """A seeded subset of the real digits: ``n_train`` training and ``n_val`` validation images."""
    full = load_dataset("digits")
    generator = torch.Generator().manual_seed(seed)
    train_index = (~full.is_val).nonzero().flatten()
    val_index = full.is_val.nonzero().flatten()
    train_index = train_index[torch.randperm(len(train_index), generator=generator)[:n_train]]
    val_index = val_index[torch.randperm(len(val_index), generator=generator)[:n_val]]
    index = torch.cat([train_index, val_index])
    images, labels = full.images[index].clone(), full.labels[index].clone()
    is_val = torch.zeros(len(index), dtype=torch.bool)
    is_val[n_train:] = True
    return ImageDataset(name="digits", images=images, labels=labels, is_val=is_val,
                        class_names=full.class_names,
                        fingerprint=content_fingerprint(images, labels, is_val, full.class_names))


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.02), ("adamw", 1e-3)])
def test_loss_falls_and_result_has_the_right_shape(optimizer: str, lr: float) -> None:
    dataset = tiny_digits()
    events: list[ProgressEvent] = []
    result = train_model(dataset, replace(TINY, optimizer=optimizer, lr=lr), device="cpu",
                         progress=events.append)
    losses = [entry["train_loss"] for entry in result.history]
    assert len(losses) == TINY.epochs
    assert losses[-1] < losses[0]
    assert result.model_config.num_classes == 10 and result.model_config.image_size == 16
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0 and result.metrics["val_n"] == 32
    assert result.metrics["steps"] == TINY.epochs * (64 // 8)
    step_events = [event for event in events if "global_step" in event.metrics]
    assert step_events, "no per-step progress"
    for key in ("epoch", "step", "loss", "accuracy", "images_per_s", "eta_s"):
        assert key in step_events[-1].metrics
    logits = predict_logits(result.model, result.model_config, dataset.images[:5], "cpu")
    assert logits.shape == (5, 10) and logits.dtype == torch.float32


def test_training_repeats_with_the_same_seed() -> None:
    dataset = tiny_digits(32, 16)
    config = replace(TINY, epochs=1)
    first = train_model(dataset, config, device="cpu")
    second = train_model(dataset, config, device="cpu")
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cancel_stops_within_one_step() -> None:
    token = CancelToken()
    steps: list[int] = []

    def on_event(event: ProgressEvent) -> None:
        if "global_step" in event.metrics:
            steps.append(event.metrics["global_step"])
            if event.metrics["global_step"] == 2:
                token.cancel()

    with pytest.raises(Cancelled):
        train_model(tiny_digits(), TINY, device="cpu", progress=on_event, cancel=token)
    assert steps == [1, 2]


def test_fine_tuning_copies_the_init_model() -> None:
    dataset = tiny_digits(32, 16)
    config = ModelConfig(num_classes=10, image_size=16)
    parent, _ = build_model(config)
    before = {name: tensor.clone() for name, tensor in parent.state_dict().items()}
    result = train_model(dataset, replace(TINY, epochs=1), device="cpu", init_model=parent,
                         model_config=config)
    assert all(torch.equal(before[name], tensor) for name, tensor in parent.state_dict().items())
    changed = [name for name, tensor in result.model.state_dict().items()
               if tensor.is_floating_point() and not torch.equal(before[name], tensor)]
    assert changed, "fine-tuning changed no weight"


def test_pretrained_fallback_reaches_progress_and_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real_create = timm.create_model

    def offline_create(name: str, pretrained: bool = False, **kwargs):
        if pretrained:
            raise ConnectionError("hub unreachable (test)")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    events: list[ProgressEvent] = []
    result = train_model(tiny_digits(32, 16), replace(TINY, epochs=1, pretrained=True), device="cpu",
                         progress=events.append)
    warnings = [event.metrics["warning"] for event in events if "warning" in event.metrics]
    assert len(warnings) == 1 and "training from scratch" in warnings[0] and "resnet18" in warnings[0]
    assert result.warnings == (warnings[0],)
    assert result.metrics["pretrained_loaded"] is False


def test_pretrained_offline_really_falls_back(tmp_path) -> None:
    code = ("from zeal_core.models.factory import ModelConfig, build_model\n"
            "model, warning = build_model(ModelConfig(num_classes=10, pretrained=True))\n"
            "print(warning)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert "could not be loaded from the timm hub (HF_HUB_OFFLINE is set)" in out.stdout
    assert "training from scratch" in out.stdout


def test_weight_average_and_flip_tta_are_what_gets_validated() -> None:
    dataset = tiny_digits(32, 16)
    config = replace(TINY, epochs=2, ema_decay=0.9, flip_tta=True)
    result = train_model(dataset, config, device="cpu")
    images, labels = dataset.split("val")
    again = evaluate(result.model, result.model_config, images, labels, "cpu", flip_tta=True)
    assert again.accuracy == pytest.approx(result.metrics["val_accuracy"])
    plain = train_model(dataset, replace(config, ema_decay=None), device="cpu")
    averaged = dict(result.model.state_dict())
    assert any(not torch.equal(tensor, averaged[name]) for name, tensor in plain.model.state_dict().items()
               if tensor.is_floating_point())


def test_invalid_setting_names_the_field() -> None:
    with pytest.raises(ConfigError, match="lr"):
        train_model(tiny_digits(32, 16), replace(TINY, lr=float("nan")), device="cpu")
    with pytest.raises(ConfigError, match="augmentation"):
        replace(TINY, augmentations=("rotate",)).validate()


def test_augment_without_crop_is_identity_or_mirror() -> None:
    images = tiny_digits(8, 0).images[:8]
    plain = prepare_batch(images, ModelConfig(image_size=32), "cpu")
    generator = torch.Generator().manual_seed(0)
    flipped = augment_batch(images, 32, generator=generator, augmentations=("flip",))
    for index in range(len(images)):
        same = torch.allclose(flipped[index], plain[index], atol=1e-4)
        mirror = torch.allclose(flipped[index], plain[index].flip(-1), atol=1e-4)
        assert same or mirror
    cropped = augment_batch(images, 20, generator=generator, augmentations=("crop", "flip"))
    assert cropped.shape == (8, 3, 20, 20) and torch.isfinite(cropped).all()
    assert not torch.allclose(cropped[0], cropped[1])


def test_corruption_augment_changes_only_the_share_of_the_batch() -> None:
    corruptions = pytest.importorskip("zeal_core.corruptions")
    name = "gaussian_noise" if "gaussian_noise" in corruptions.list_corruptions() else \
        corruptions.list_corruptions()[0]
    corrupter = _BatchCorrupter(f"{name}:4", share=0.5, seed=0)
    images = tiny_digits(16, 0).images[:16]
    out = corrupter(images, step=0)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out[:8], images[:8])
    assert torch.equal(out[8:], images[8:])
    clean = _BatchCorrupter("clean", share=None, seed=0)
    assert torch.equal(clean(images, step=0), images)


def test_training_with_corruption_augment_runs() -> None:
    corruptions = pytest.importorskip("zeal_core.corruptions")
    name = corruptions.list_corruptions()[0]
    result = train_model(tiny_digits(32, 16), replace(TINY, epochs=1, corruption_augment=f"{name}:3@0.5"),
                         device="cpu")
    assert result.history[0]["train_loss"] > 0


def test_summary_counts_and_empty_classes() -> None:
    predictions = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 2, 2, 1])
    result = summarize_predictions(predictions, labels, 4, ["a", "b", "c", "d"])
    assert result.n == 5 and result.accuracy == pytest.approx(3 / 5)
    assert result.confusion[2] == [0, 1, 1, 0] and sum(map(sum, result.confusion)) == 5
    assert result.per_class_accuracy == {"a": 1.0, "b": 0.5, "c": 0.5, "d": None}


def test_evaluate_agrees_with_logits() -> None:
    dataset = tiny_digits(16, 16)
    config = ModelConfig(num_classes=10, image_size=24)
    model, _ = build_model(config)
    images, labels = dataset.split("val")
    result = evaluate(model, config, images, labels, "cpu", dataset.class_names)
    predictions = predict_logits(model, config, images, "cpu").argmax(dim=1)
    assert result.accuracy == pytest.approx(float((predictions == labels).float().mean()))
    assert sum(map(sum, result.confusion)) == 16


def _cli(*args: str, module: str = "zeal_core") -> dict:
    out = subprocess.run([sys.executable, "-m", module, *args, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cli_train_then_evaluate_print_one_json_object() -> None:
    trained = _cli("train", "--dataset", "digits", "--epochs", "1", "--image-size", "16", "--device", "cpu")
    assert set(trained) >= {"version", "val_accuracy", "seconds"}
    assert 0.0 <= trained["val_accuracy"] <= 1.0 and trained["active"] is True
    evaluated = _cli("evaluate", "--model", trained["version"])
    assert evaluated["version"] == trained["version"]
    assert evaluated["accuracy"] == pytest.approx(trained["val_accuracy"])
    assert len(evaluated["confusion"]) == 10 and set(evaluated["per_class_accuracy"]) == set("0123456789")
    assert sum(map(sum, evaluated["confusion"])) == evaluated["n"]


def test_cli_evaluate_unknown_model_fails_with_one_line_reason() -> None:
    out = subprocess.run([sys.executable, "-m", "zeal_core", "evaluate", "--model", "nope-1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no model version 'nope-1'" in out.stderr


@pytest.mark.slow
def test_cli_bench_train_reports_both_recipes() -> None:
    summary = _cli("train", "--dataset", "digits", "--max-seconds", "1", "--epochs", "1",
                   "--image-size", "16", "--val-limit", "16", "--reference-epochs", "1",
                   "--reference-workers", "0", "--device", "cpu", module="benchmarks")
    assert summary["dataset"] == "digits" and summary["target_accuracy"] == pytest.approx(0.97)
    for run in ("ours", "reference"):
        assert summary[run]["images_per_s"] > 0 and 0.0 <= summary[run]["val_accuracy"] <= 1.0
        assert summary[run]["epochs_run"] == 1
    assert summary["speedup_images_per_s"] > 0
