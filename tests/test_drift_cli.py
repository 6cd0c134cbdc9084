"""The ``drift`` command and the ``bench detectors`` grid, on a tiny random model and synthetic features."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from zeal_core.cli import main
from zeal_core.models import ModelConfig, create_model


@pytest.fixture()
def tiny_version() -> str:
    from zeal_core.data import load_dataset
    from zeal_core.models.registry import ModelRegistry

    config = ModelConfig(arch="resnet18", num_classes=10, image_size=32, pretrained=False)
    torch.manual_seed(0)
    card = ModelRegistry().save(create_model(config), model_config=config, dataset="digits",
                                dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    return card.version


def test_drift_command_json(tiny_version: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["drift", "--model", tiny_version, "--drift", "gaussian_noise:5", "--n", "40",
                 "--reference-n", "60", "--detector", "mmd,bbsd,c2st", "--permutations", "200",
                 "--device", "cpu", "--json"])
    output = json.loads(capsys.readouterr().out)
    assert code == 0
    assert output["version"] == tiny_version and output["drift"] == "gaussian_noise:5"
    assert output["n"] == 40 and output["reference_n"] == 60
    assert [result["detector"] for result in output["results"]] == ["mmd", "bbsd", "c2st"]
    for result in output["results"]:
        assert 0.0 < result["p_value"] <= 1.0 and result["is_drift"] == (result["p_value"] < 0.05)
    # Even an untrained network's features move under severity-5 noise on every image.
    assert "mmd" in output["drift_detected_by"]
    # The check service's settings: the profile named, the explicit changes listed; the report ranks the
    # drift-typical images itself (c2st only tests, as in every other caller).
    settings = output["settings"]
    assert settings["profile"] == "standard" and settings["permutations"] == 200
    assert set(settings["overrides"]) == {"reference_n", "detectors", "permutations"}
    assert output["typical"] and all(0.0 <= item["score"] <= 1.0 for item in output["typical"])


def test_drift_command_uses_the_lab_profile(tiny_version: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No flags: the lab's profile (standard: mmd, ks, cvm, bbsd), as the pages and ``check`` use it."""
    code = main(["drift", "--model", tiny_version, "--drift", "clean", "--n", "30", "--reference-n", "40",
                 "--device", "cpu", "--json"])
    output = json.loads(capsys.readouterr().out)
    assert code == 0 and [result["detector"] for result in output["results"]] == ["mmd", "ks", "cvm", "bbsd"]
    assert output["settings"]["overrides"] == ["reference_n"] and output["alpha"] == 0.05


def test_drift_command_errors(tiny_version: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--model", tiny_version, "--detector", "nope", "--json"]) == 2
    assert "unknown detector" in json.loads(capsys.readouterr().out)["error"]
    assert main(["drift", "--model", tiny_version, "--n", "100000", "--detector", "ks", "--json"]) == 2
    assert "n = 100000" in json.loads(capsys.readouterr().out)["error"]


def test_bench_grid_on_synthetic_features() -> None:
    from benchmarks.detectors import _synthetic_features, add_arguments, grid_markdown, run_grid

    features, info = _synthetic_features([("shift", 5.0)], seed=0)
    grid = run_grid(features, ["ks", "bbsd"], sizes=[50, 5000], drifts=[("shift", 5.0, 1.0)], null_trials=4,
                    trials=3, alpha=0.05, permutations=50, seed=0, device="cpu")
    assert grid["sizes"] == [50] and grid["skipped_sizes"] == [5000]
    assert grid["detection_rate"]["ks"]["shift:5@1"][50] == 1.0
    assert 0.0 <= grid["false_positive_rate"]["bbsd"][50] <= 1.0
    table = grid_markdown(grid)
    assert "| ks |" in table and "shift:5@1" in table
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--sizes", "10,20", "--detectors", "mmd,ks", "--skip-speed"])
    assert args.sizes == (10, 20) and args.detectors == ("mmd", "ks") and info["dims"] == 64
    assert np.isfinite(features[None].features).all()
    assert "standard error of 0.109" in table  # sqrt(0.05 * 0.95 / 4): how far a cell may stray by chance


def test_bench_speed_parts_are_skipped_without_their_package() -> None:
    from benchmarks.detectors import _optional

    def needs_missing_package() -> dict:
        import zeal_missing_package  # noqa: F401

        return {"seconds": 1.0}

    assert _optional(lambda: {"seconds": 1.0}) == {"seconds": 1.0}
    assert _optional(needs_missing_package) == {"skipped": "zeal_missing_package is not installed"}
