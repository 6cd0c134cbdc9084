"""``python -m zeal_core check``: exit codes on folders of clean, corrupted and broken images; the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from zeal_core.cli import main
from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import part_positions
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry


@pytest.fixture()
def model_version() -> str:
    config = ModelConfig(arch="resnet18", num_classes=10, image_size=32)
    torch.manual_seed(0)
    card = ModelRegistry().save(create_model(config), model_config=config, dataset="digits",
                                dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    return card.version


def _write_images(folder: Path, images: torch.Tensor) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"img_{index:03d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def _held_out(count: int) -> torch.Tensor:
    """Images from the held-out sample half (the reference is drawn from the other half)."""
    images, _ = load_dataset("digits").split("val")
    positions = part_positions(images.shape[0], "sample")[:count]
    return images[torch.from_numpy(positions)]


def _check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["check", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_exit_codes_clean_drifted_and_broken(model_version: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    clean = _held_out(80)
    _write_images(tmp_path / "clean" / "sub", clean)  # a nested folder: searched recursively
    code, clean_out = _check([str(tmp_path / "clean"), "--reference-n", "120"], capsys)
    assert code == 0 and clean_out["drift"] is False and clean_out["n"] == 80
    assert "Bonferroni" in clean_out["rule"] and clean_out["check_id"] == 1

    _write_images(tmp_path / "noisy", DriftSpec.parse("gaussian_noise:5").apply(clean, seed=0))
    code, noisy_out = _check([str(tmp_path / "noisy" / "*.png"), "--reference-n", "120"], capsys)
    assert code == 1 and noisy_out["drift"] is True and noisy_out["exit_code"] == 1
    assert noisy_out["decision"]["flagged"] and noisy_out["most_drifted"][0]["file"].endswith(".png")
    # The label-free parts: every estimate with its interval, and a diagnosis with ranked causes.
    for out in (clean_out, noisy_out):
        first = out["estimates"][0]
        # Once the diagnosis has warmed up, the bank-fitted estimator leads (pm-atc under a label shift).
        assert first["estimator"] in ("shift-calibrated", "pm-atc")
        assert 0 <= first["low"] <= first["accuracy"] <= first["high"] <= 1
        assert out["estimated_accuracy"].startswith(f"{first['accuracy']:.1%}")
        assert out["diagnosis"]["verdict"] in ("no drift", "covariate shift", "label shift", "unknown shift")
        assert out["cause"] == out["diagnosis"]["summary"] and not out["pending"]
    assert clean_out["diagnosis"]["verdict"] == "no drift"  # the detectors found nothing: no drift
    assert noisy_out["diagnosis"]["verdict"] != "no drift" and len(noisy_out["diagnosis"]["causes"]) > 3
    kept = ModelRegistry().root / f"{model_version}.fitted"  # the fitted reference, next to the model
    assert list(kept.glob("bank-*.npz")) and list(kept.glob("warm-*.npz"))  # for the next process

    broken = tmp_path / "broken"
    _write_images(broken, clean[:10])
    (broken / "empty.png").write_bytes(b"")
    (broken / "notes.txt").write_text("not an image")
    code, broken_out = _check([str(broken), str(tmp_path / "missing"), "--no-record", "--no-diagnosis"],
                              capsys)
    assert code in (0, 1) and broken_out["n"] == 10 and "check_id" not in broken_out
    assert broken_out["diagnosis"] is None and broken_out["estimates"]  # estimates need no warm-up
    reasons = {Path(item["file"]).name: item["reason"] for item in broken_out["skipped"]}
    assert set(reasons) == {"empty.png", "notes.txt", "missing"}

    assert main(["history", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["count"] == 2 and [row["drift"] for row in history["checks"]] == [False, True]
    assert main(["history", "show", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["report"]["decision"]["drift"] is True and shown["batch_file"] == "2.safetensors"
    assert shown["diagnosis"] == noisy_out["cause"]  # the history keeps the diagnosis in one line
    assert shown["estimated_accuracy"] == pytest.approx(noisy_out["estimates"][0]["accuracy"])


def test_user_errors_exit_2(model_version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check([str(tmp_path / "nothing-here")], capsys)
    assert code == 2 and "no image files to check" in out["error"]
    (tmp_path / "one").mkdir()
    _write_images(tmp_path / "one", _held_out(1))
    code, out = _check([str(tmp_path / "one")], capsys)
    assert code == 2 and "at least 2 images" in out["error"]
    _write_images(tmp_path / "two", _held_out(4))
    code, out = _check([str(tmp_path / "two"), "--detector", "banana"], capsys)
    assert code == 2 and "unknown detector" in out["error"]
