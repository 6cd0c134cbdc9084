"""The model registry: round trips, atomic writes, damaged files, and never unpickling anything."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from zeal_core.errors import ConfigError, ModelError
from zeal_core.models.factory import ModelConfig, build_model, prepare_batch
from zeal_core.models.registry import ModelCard, ModelRegistry

CONFIG = ModelConfig(arch="resnet18", num_classes=3, image_size=16)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, _ = build_model(CONFIG)
    return model.eval()


def _save(registry: ModelRegistry, model: torch.nn.Module, dataset: str = "digits", **extra) -> ModelCard:
    return registry.save(model, model_config=CONFIG, dataset=dataset, dataset_fingerprint="f" * 64,
                         recipe={"epochs": 1}, metrics={"val_accuracy": 0.5}, **extra)


def _inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return prepare_batch(images, CONFIG, "cpu")


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_default_root_is_the_models_dir(isolated_dirs: Path) -> None:
    assert ModelRegistry().root == isolated_dirs / "models"


def test_save_then_load_gives_identical_logits(registry: ModelRegistry) -> None:
    model = _model()
    card = _save(registry, model, notes="first")
    assert re.fullmatch(r"digits-resnet18-\d{8}T\d{6}-[0-9a-f]{4}", card.version)
    loaded, loaded_card = registry.load(card.version)
    assert not loaded.training
    with torch.inference_mode():
        assert torch.equal(model(_inputs()), loaded(_inputs()))
    assert loaded_card == card == registry.card(card.version)
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert (registry.root / f"{card.version}.safetensors").exists()
    assert json.loads((registry.root / f"{card.version}.json").read_text())["weights_sha256"] == \
        card.weights_sha256


def test_list_latest_delete_and_active(registry: ModelRegistry) -> None:
    first = _save(registry, _model(0), dataset="digits")
    second = _save(registry, _model(1), dataset="folder:/tmp/my images", parent=first.version,
                   strategy="finetune", drift_spec="fog:2")
    assert second.version.startswith("folder-tmp-my-images-resnet18-")
    assert {card.version for card in registry.list()} == {first.version, second.version}
    assert registry.latest(dataset="digits") == first
    assert registry.get_active() is None
    registry.set_active(first.version)
    assert registry.get_active() == first.version
    registry.delete(first.version)
    assert registry.get_active() is None
    assert [card.version for card in registry.list()] == [second.version]
    assert registry.latest() == second and registry.latest(dataset="digits") is None
    with pytest.raises(ModelError, match="no model version"):
        registry.load(first.version)
    with pytest.raises(ModelError):
        registry.set_active(first.version)


@pytest.mark.parametrize("version", ["../escape", "a/b", "", ".."])
def test_unsafe_version_names_are_refused(registry: ModelRegistry, version: str) -> None:
    with pytest.raises(ConfigError):
        registry.load(version)


def test_write_killed_before_the_card_leaves_no_version(registry: ModelRegistry,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = _save(registry, _model(0))

    def crash(card: ModelCard) -> None:
        raise KeyboardInterrupt("killed between weights and card")

    monkeypatch.setattr(registry, "_write_card", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(registry, _model(1))
    monkeypatch.undo()
    orphans = [path for path in registry.root.glob("*.safetensors") if path.stem != good.version]
    assert len(orphans) == 1  # the weights were written, but without a card they are no version
    (registry.root / f".{good.version}.json.abc.tmp").write_text("{half a card")
    (registry.root / "stray-weights.safetensors").write_bytes(b"\x00" * 64)
    assert [card.version for card in registry.list()] == [good.version]
    model, _ = registry.load(good.version)
    assert model is not None


def test_process_killed_midway_leaves_the_registry_valid(registry: ModelRegistry) -> None:
    code = f"""
import os, torch
from zeal_core.models.factory import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
registry = ModelRegistry({str(registry.root)!r})
config = ModelConfig(num_classes=3, image_size=16)
save = lambda: registry.save(create_model(config), model_config=config, dataset="digits",
                             dataset_fingerprint="x", recipe={{}}, metrics={{}})
print(save().version, flush=True)
registry._write_card = lambda card: os._exit(9)  # the process dies after the weights, before the card
save()
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    survivor = out.stdout.strip()
    assert [card.version for card in registry.list()] == [survivor]
    assert len(list(registry.root.glob("*.safetensors"))) == 2
    registry.load(survivor)


def test_changed_weights_are_skipped_and_refused(registry: ModelRegistry) -> None:
    card = _save(registry, _model(0))
    weights = registry.root / f"{card.version}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert registry.list() == []
    with pytest.raises(ModelError, match="sha256"):
        registry.load(card.version)
    weights.unlink()
    with pytest.raises(ModelError, match="no weights file"):
        registry.load(card.version)


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("card_matches", [False, True])
def test_pickle_renamed_safetensors_is_refused_and_never_run(registry: ModelRegistry, tmp_path: Path,
                                                            writer: str, card_matches: bool) -> None:
    card = _save(registry, _model(0))
    weights = registry.root / f"{card.version}.safetensors"
    marker = tmp_path / "code-ran"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state": _Payload(marker)}, weights)
    if card_matches:  # an attacker who also rewrote the card's checksum
        import hashlib

        values = card.to_dict()
        values["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (registry.root / f"{card.version}.json").write_text(json.dumps(values))
    with pytest.raises(ModelError) as error:
        registry.load(card.version)
    assert ("not a safetensors file" in str(error.value)) if card_matches else ("sha256" in str(error.value))
    assert not marker.exists()


def test_card_for_another_architecture_is_a_clear_error(registry: ModelRegistry) -> None:
    card = _save(registry, _model(0))
    values = card.to_dict()
    values["model_config"]["num_classes"] = 5
    (registry.root / f"{card.version}.json").write_text(json.dumps(values))
    with pytest.raises(ModelError, match="do not fit resnet18 with 5 classes"):
        registry.load(card.version)
