"""Folders are arguments: the data loaders use the folder and params file they are given, and no pipeline
stage changes the process's environment. Also the stage table and the strict training overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import ROOT
from tests.test_data_imagenette import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, good_archive, md5
from zeal_core.data import forget_datasets, is_prepared, load_dataset, prepare_dataset, shared_dataset
from zeal_core.data.imagenette import archive_path
from zeal_core.errors import ConfigError, DataError
from zeal_core.paths import data_dir
from zeal_core.pipeline import STAGES, DriftEvalParams, StagePaths, list_stages, load_params, run_stage
from zeal_core.pipeline.params import train_config
from zeal_core.train import TrainConfig, default_config

# A pipeline small enough to run every stage in-process in seconds: a tiny timm ResNet at 16 px, one epoch.
TINY_TRAIN = {"arch": "test_resnet", "image_size": 16, "batch_size": 64, "epochs": 1,
              "eval_each_epoch": False, "augmentations": []}
TINY_EVALUATE = {"corruptions": ["contrast"], "severities": [5], "max_images": 40, "batch_size": 64}
TINY_DRIFT = {"detectors": ["ks"], "corruptions": ["contrast"], "severities": [5], "sample_size": 20,
              "reference_size": 30, "max_images": 60, "trials": 2, "alpha": 0.05, "batch_size": 64}


def _params_file(folder: Path, edit=None) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = "digits"
    if edit is not None:
        edit(params)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# Set by torch itself the first time torch._inductor is imported (training on the CPU imports it): not ours.
TORCH_OWN_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR",)


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in TORCH_OWN_VARIABLES}


@pytest.fixture
def no_imagenette_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over params files: clear it so the params file given is what counts."""
    for variable in ("ZEAL_IMAGENETTE_URL", "ZEAL_IMAGENETTE_MD5", "ZEAL_PARAMS"):
        monkeypatch.delenv(variable, raising=False)


# --- loaders take root and params_file ----------------------------------------------------------------------


def test_imagenette_loaders_use_the_given_folder_and_params_file(tmp_path: Path,
                                                                 no_imagenette_environment) -> None:
    body = good_archive()
    root = tmp_path / "elsewhere"
    archive_path(root).parent.mkdir(parents=True)
    archive_path(root).write_bytes(body)
    params_file = _params_file(tmp_path, lambda p: p["data"]["imagenette"].update(
        url=str(tmp_path / "no-such-mirror.tgz"), md5=md5(body), image_size=32))  # a download would fail
    environment = dict(os.environ)

    assert not is_prepared("imagenette", root=root, params_file=params_file)
    dataset = prepare_dataset("imagenette", root=root, params_file=params_file)
    count = len(CLASSES) * (TRAIN_PER_CLASS + VAL_PER_CLASS)
    assert dataset.images.shape == (count, 3, 32, 32)  # the size from the params file given
    assert is_prepared("imagenette", root=root, params_file=params_file)
    assert sorted(path.suffix for path in (root / "imagenette").iterdir()) == [".json", ".safetensors"]
    loaded = load_dataset("imagenette", root=root, params_file=params_file)
    assert loaded.fingerprint == dataset.fingerprint and torch.equal(loaded.images, dataset.images)
    try:
        assert shared_dataset("imagenette", root=root, params_file=params_file) is \
            shared_dataset("imagenette", root=root, params_file=params_file)
    finally:
        forget_datasets()

    # The default folder (ZEAL_DATA_DIR, the test's own) was never touched and has no cache.
    assert list(data_dir().iterdir()) == []
    assert not is_prepared("imagenette", params_file=params_file)
    with pytest.raises(DataError, match="not prepared"):
        load_dataset("imagenette", params_file=params_file)
    assert dict(os.environ) == environment


def test_folder_dataset_cache_goes_to_the_given_folder(tmp_path: Path) -> None:
    images = tmp_path / "pictures"
    for name, color in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (images / name).mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (20 + index, 18), color).save(images / name / f"{index}.png")
    root = tmp_path / "cache-root"
    name = f"folder:{images}"

    dataset = load_dataset(name, root=root, image_size=16)
    assert dataset.class_names == ("cats", "dogs") and dataset.images.shape[-1] == 16
    assert len(list((root / "folders").glob("*.safetensors"))) == 1
    assert is_prepared(name, image_size=16, root=root)
    assert not is_prepared(name, image_size=16)  # not in the default data folder
    assert list(data_dir().iterdir()) == []


# --- stages ------------------------------------------------------------------------------------------------


def test_stage_table_is_the_dvc_pipeline() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list_stages() == list(stages)
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m zeal_core.pipeline {name}"


def test_unknown_stage_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown pipeline stage 'deploy'.*drift-eval"):
        run_stage("deploy", ROOT / "params.yaml", tmp_path)
    assert not (tmp_path / "reports").exists()


def test_every_stage_leaves_the_environment_unchanged(tmp_path: Path, no_imagenette_environment) -> None:
    """All six stages in-process on digits, in dvc.yaml's order; os.environ is the same after each."""

    def tiny(params: dict) -> None:
        params["pipeline"]["threads"] = 0
        params["train"]["digits"] = TINY_TRAIN
        params["evaluate"]["digits"] = TINY_EVALUATE
        params["drift_eval"]["digits"] = TINY_DRIFT

    project = tmp_path / "project"
    project.mkdir()
    params_file = _params_file(project, tiny)
    paths = StagePaths.for_dataset("digits", project)
    for stage in list_stages():
        before = _environment()
        summary = run_stage(stage, params_file, project)
        assert _environment() == before, f"stage {stage} changed the environment"
        assert summary, f"stage {stage} returned nothing"
    for path in (paths.raw / "source.json", paths.data_json, paths.train_json, paths.robustness_csv,
                 paths.drift_csv, paths.report_md):
        assert path.is_file(), path
    assert list(paths.models.glob("*.safetensors"))  # the model went to the stage's registry folder
    assert list(Path(os.environ["ZEAL_MODELS_DIR"]).iterdir()) == []  # not to the default one
    assert "contrast:5" in paths.drift_csv.read_text()


# --- parameters --------------------------------------------------------------------------------------------


def test_drift_eval_params_become_the_grid_drifts() -> None:
    params = DriftEvalParams(detectors=("ks",), corruptions=("fog", "contrast"), severities=(1, 2.5),
                             fraction=0.5, sample_size=10, reference_size=20, trials=3)
    grid = params.grid_config()
    assert grid.drifts == ("fog:1@0.5", "fog:2.5@0.5", "contrast:1@0.5", "contrast:2.5@0.5")
    assert [spec.text for spec in grid.specs()] == ["clean", *grid.drifts]
    assert (grid.detectors, grid.sample_size, grid.reference_size, grid.trials) == (("ks",), 10, 20, 3)
    assert DriftEvalParams(corruptions=("fog",), severities=(3,)).grid_config().drifts == ("fog:3",)


def test_train_overrides_are_strict(tmp_path: Path) -> None:
    params_file = _params_file(tmp_path, lambda p: p["train"].update(digits={"epochs": 2, "lr": 0.05}))
    config = train_config(load_params(params_file), params_file, gpu=False)
    assert (config.epochs, config.lr, config.seed) == (2, 0.05, 0)  # seed: pipeline.seed
    bad = _params_file(tmp_path, lambda p: p["train"].update(digits={"epoch": 2}))
    with pytest.raises(ConfigError, match=r"train\.digits: unknown setting\(s\) \['epoch'\].*'epochs'"):
        train_config(load_params(bad), bad, gpu=False)


def test_train_config_from_dict_is_strict() -> None:
    config = default_config("digits")
    assert TrainConfig.from_dict(config.to_dict()) == config  # lists become tuples again
    with pytest.raises(ConfigError, match=r"stored recipe: unknown setting\(s\) \['init'\]"):
        TrainConfig.from_dict({**config.to_dict(), "init": "weights.pt"}, "stored recipe")
