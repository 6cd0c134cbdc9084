"""Export: a version leaves the lab as files plain timm loads (two lines), with its card, and comes back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from tests.test_models_import import snapshot
from zeal_core.errors import ConfigError, ModelError
from zeal_core.evaluate import predict_logits
from zeal_core.importing import import_checkpoint
from zeal_core.models.export import export_files, export_version, list_export_formats, load_hint
from zeal_core.models.factory import ModelConfig, create_model, prepare_batch
from zeal_core.models.registry import ModelCard, ModelRegistry

# Not the defaults anywhere: a round trip that dropped the input size or normalisation would show.
CONFIG = ModelConfig(arch="resnet18", num_classes=10, image_size=24, mean=(0.5, 0.45, 0.4),
                     std=(0.3, 0.25, 0.2))


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture
def version(registry: ModelRegistry) -> str:
    """A random-init ResNet-18 with non-trivial batch-norm statistics, saved as a version."""
    torch.manual_seed(0)
    model = create_model(CONFIG)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return registry.save(model, model_config=CONFIG, dataset="digits", dataset_fingerprint="f", recipe={},
                         metrics={"val_accuracy": 0.1}).version


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    """A fixed input batch: 6 uint8 images at 32 px."""
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (6, 3, 32, 32), generator=generator, dtype=torch.uint8)


def lab_logits(registry: ModelRegistry, version: str, images: torch.Tensor) -> torch.Tensor:
    model, card = registry.load(version)
    return predict_logits(model, card.model_config, images, "cpu")


def test_safetensors_export_loads_in_plain_timm_with_two_lines(registry: ModelRegistry, version: str,
                                                               inputs: torch.Tensor, tmp_path: Path) -> None:
    result = export_version(version, tmp_path / "out")
    path = result["weights"]
    card = json.loads(Path(result["card"]).read_text())
    # The two documented lines, with the arch and class count from the card.
    m = timm.create_model(card["model_config"]["arch"], num_classes=card["model_config"]["num_classes"])
    m.load_state_dict(safetensors.torch.load_file(path))
    m.eval()
    with torch.no_grad():
        plain = m(prepare_batch(inputs, ModelConfig.from_dict(card["model_config"]), "cpu"))
    assert torch.equal(plain, lab_logits(registry, version, inputs))
    assert card["weights_sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest() == result["sha256"]
    assert card["model_config"]["mean"] == [0.5, 0.45, 0.4] and card["export"]["input"]["image_size"] == 24
    assert result["load"] == load_hint(registry.card(version))
    assert "safetensors.torch.load_file" in result["load"] and "num_classes=10" in result["load"]


def test_state_dict_export_loads_with_weights_only(registry: ModelRegistry, version: str,
                                                   inputs: torch.Tensor, tmp_path: Path) -> None:
    result = export_version(version, tmp_path, "state-dict", name="plain")
    assert Path(result["weights"]).name == "plain.pth" and Path(result["card"]).name == "plain.json"
    m = timm.create_model("resnet18", num_classes=10)
    m.load_state_dict(torch.load(result["weights"], weights_only=True))
    m.eval()
    with torch.no_grad():
        plain = m(prepare_batch(inputs, CONFIG, "cpu"))
    assert torch.equal(plain, lab_logits(registry, version, inputs))


def test_exported_safetensors_comes_back_without_options(registry: ModelRegistry, version: str,
                                                         inputs: torch.Tensor, tmp_path: Path) -> None:
    files = export_files(version)
    card = import_checkpoint(files.weights, filename=files.weights_name, dataset="digits", registry=registry,
                             device="cpu")
    assert card.model_config == CONFIG and card.recipe["import"]["exported_from"] == version
    assert card.recipe["import"]["defaults_from"] == {"image_size": "file metadata", "mean": "file metadata",
                                                      "std": "file metadata"}
    assert torch.equal(lab_logits(registry, card.version, inputs), lab_logits(registry, version, inputs))


def test_exported_pair_is_a_version_of_another_lab(registry: ModelRegistry, version: str,
                                                   inputs: torch.Tensor, tmp_path: Path) -> None:
    other = ModelRegistry(tmp_path / "other-lab")
    export_version(version, other.root)
    assert other.versions() == [version]
    assert torch.equal(lab_logits(other, version, inputs), lab_logits(registry, version, inputs))
    assert isinstance(ModelCard.from_json(other.card_path(version).read_text()), ModelCard)


def test_export_refuses_bad_requests_and_never_touches_the_registry(registry: ModelRegistry, version: str,
                                                                    tmp_path: Path) -> None:
    before = snapshot(registry.root)
    out = tmp_path / "exports"
    out.mkdir()
    a_file = out / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"unknown export format 'onnx': choose one of safetensors, "
                                          r"state-dict"):
        export_version(version, out, "onnx")
    with pytest.raises(ModelError, match=r"export folder .*file\.txt is a file"):
        export_version(version, a_file)
    with pytest.raises(ModelError, match=r"no model version 'nope'"):
        export_version("nope", out)
    with pytest.raises(ConfigError, match=r"export file name"):
        export_version(version, out, name="../escape")
    assert snapshot(registry.root) == before
    assert sorted(path.name for path in out.iterdir()) == ["file.txt"]
    assert list_export_formats() == ["safetensors", "state-dict"]
