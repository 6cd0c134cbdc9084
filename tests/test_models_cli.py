"""``models list/import/export`` and ``train --init/--pretrained`` on the command line: exit codes, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import ROOT
from tests.test_models_import import CreateMarker, snapshot
from zeal_core import cli
from zeal_core.models.factory import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """A random-init 10-class ResNet-18's weights (what matters here is the plumbing, not accuracy)."""
    torch.manual_seed(0)
    return create_model(ModelConfig(num_classes=10)).state_dict()


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict, str]:
    """Exit code, the one JSON object printed on stdout, and stderr."""
    code = cli.main([*argv, "--json"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out
    return code, json.loads(lines[0]), captured.err


def test_import_list_export_and_import_again(state: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "model.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)
    code, imported, _ = run(capsys, "models", "import", "--weights", str(weights), "--arch", "resnet18",
                            "--dataset", "digits")
    assert code == 0
    assert imported["head"] == "kept" and imported["source"] == "model.pth" and imported["active"] is True
    assert imported["val_n"] == 450 and imported["image_size"] == 32 and imported["seconds"]["total"] > 0
    code, listing, _ = run(capsys, "models", "list")
    assert code == 0 and listing["count"] == 1 and listing["active"] == imported["version"]
    assert listing["versions"][0]["strategy"] == "import"
    code, exported, _ = run(capsys, "models", "export", "active", "--out", str(tmp_path / "out"))
    assert code == 0 and Path(exported["weights"]).exists() and Path(exported["card"]).exists()
    code, again, _ = run(capsys, "models", "import", "--weights", exported["weights"], "--dataset", "digits")
    assert code == 0 and again["arch"] == "resnet18" and again["active"] is False
    assert again["val_accuracy"] == imported["val_accuracy"]


def test_class_list_and_normalisation_flags(state: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    three = dict(state)
    three["fc.weight"], three["fc.bias"] = state["fc.weight"][:3], state["fc.bias"][:3]
    weights = tmp_path / "three.safetensors"
    save_file(three, str(weights))
    code, imported, _ = run(capsys, "models", "import", "--weights", str(weights), "--arch", "resnet18",
                            "--dataset", "digits", "--classes", "7", "1", "3", "--mean", "0.5", "0.5", "0.5",
                            "--std", "0.25", "0.25", "0.25", "--image-size", "24")
    assert code == 0
    assert imported["class_names"] == ["7", "1", "3"] and imported["num_classes"] == 3
    assert imported["mean"] == [0.5] * 3 and imported["std"] == [0.25] * 3 and imported["image_size"] == 24


@pytest.mark.parametrize(("case", "message"), [
    ("pickle with code", "refused without running"),
    ("wrong class count", "predicts 1000 classes but the dataset has 10: add --reset-head"),
    ("missing file", "does not exist"),
])
def test_bad_import_exits_2_with_a_one_line_reason(case: str, message: str, state: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "bad.pth"
    marker = tmp_path / "PWNED"
    if case == "pickle with code":
        torch.save({"state_dict": state, "x": CreateMarker(marker)}, weights)
    elif case == "wrong class count":
        torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, weights)
    registry = ModelRegistry()
    before = snapshot(registry.root)
    code, result, err = run(capsys, "models", "import", "--weights", str(weights), "--arch", "resnet18",
                            "--dataset", "digits")
    assert code == 2 and result["ok"] is False and message in result["error"]
    assert err.strip().splitlines()[-1] == f"error: {result['error']}"
    assert snapshot(registry.root) == before and not marker.exists()
    assert cli.main(["models", "import", "--weights", str(weights), "--arch", "resnet18", "--dataset",
                     "digits"]) == 2
    assert capsys.readouterr().out == ""  # without --json nothing goes to stdout on error


def test_export_of_a_missing_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, result, _ = run(capsys, "models", "export", "nope", "--out", str(tmp_path))
    assert code == 2 and "no model version 'nope'" in result["error"]
    # An unknown format is a user error too (the registry's names are checked when the command runs, so that
    # `zeal --help` imports no torch): exit 2, naming the formats there are.
    code, result, _ = run(capsys, "models", "export", "nope", "--out", str(tmp_path), "--format", "onnx")
    assert code == 2 and "unknown export format 'onnx'" in result["error"]
    assert "safetensors" in result["error"]


def test_train_init_fine_tunes_from_a_checkpoint(state: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "imagenet.pth"
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, weights)
    code, result, _ = run(capsys, "train", "--dataset", "digits", "--init", str(weights), "--epochs", "1",
                          "--max-seconds", "0.5", "--image-size", "16")
    assert code == 0 and result["start"] == "checkpoint imagenet.pth"
    card = ModelRegistry().card(result["version"])
    assert card.strategy == "finetune" and card.recipe["init"]["head"] == "new"
    assert card.recipe["init"]["sha256"] and "1000-class classifier was replaced" in card.notes
    registry = ModelRegistry()
    before = snapshot(registry.root)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": state, "x": CreateMarker(tmp_path / "PWNED")}, evil)
    code, result, _ = run(capsys, "train", "--dataset", "digits", "--init", str(evil), "--epochs", "1")
    assert code == 2 and "refused without running" in result["error"] and not (tmp_path / "PWNED").exists()
    code, result, _ = run(capsys, "train", "--dataset", "digits", "--init", str(weights), "--pretrained")
    assert code == 2 and "not both" in result["error"]
    assert snapshot(registry.root) == before


@pytest.mark.slow
def test_pretrained_offline_says_so_plainly(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "ZEAL_MODELS_DIR": str(tmp_path / "models")}
    out = subprocess.run([sys.executable, "-m", "zeal_core", "train", "--dataset", "digits", "--pretrained",
                          "--epochs", "1", "--max-seconds", "0.5", "--image-size", "16", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["pretrained"] is False
    assert result["start"] == "random weights (pretrained weights could not be loaded)"
    assert "could not be loaded from the timm hub (HF_HUB_OFFLINE is set)" in result["warning"]
    assert "training from scratch" in result["warning"]
    assert f"warning: {result['warning']}" in out.stderr
    card = ModelRegistry(tmp_path / "models").card(result["version"])
    assert result["warning"] in card.notes and card.metrics["pretrained_loaded"] is False
