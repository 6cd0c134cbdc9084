"""Fast checks of the pipeline's pieces (parameters, tables, report) and of the app settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from zeal_core.errors import ConfigError
from zeal_core.pipeline import StagePaths, load_params, run_stage, write_report
from zeal_core.pipeline.report import write_csv, write_json
from zeal_core.reference.grid import DetectorGridConfig, detector_table
from zeal_core.robustness import MCE_DEFINITION, RobustnessTable, robustness_table
from zeal_core.settings import AppSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent


# --- params.yaml ------------------------------------------------------------------------------------------


def test_project_params_load_for_every_pipeline_dataset(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert "data" in params  # the data engineer's section is kept
    for dataset in ("digits", "imagenette"):
        params["dataset"] = dataset
        path = tmp_path / f"{dataset}.yaml"
        path.write_text(yaml.safe_dump(params))
        loaded = load_params(path)
        assert loaded.dataset == dataset
        assert loaded.drift_eval.trials >= 1 and loaded.evaluate.severities


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda p: p.update(dataset="folder:/tmp/x"), "dataset"),
    (lambda p: p["evaluate"]["digits"].update(severities=[0, 9]), "severities"),
    (lambda p: p["evaluate"]["digits"].update(colour="red"), "colour"),
    (lambda p: p["drift_eval"]["digits"].update(trials=0), "trials"),
    (lambda p: p["drift_eval"]["digits"].update(alpha=1.5), "alpha"),
])
def test_bad_params_name_the_key(tmp_path: Path, edit, fragment: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = "digits"
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=fragment):
        load_params(path)


def test_dvc_yaml_paths_match_stage_paths() -> None:
    """dvc.yaml declares, per stage, the same files the stage code writes."""
    text = (ROOT / "dvc.yaml").read_text().replace("${dataset}", "digits")
    stages = yaml.safe_load(text)["stages"]
    declared = set()
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                declared.add(entry if isinstance(entry, str) else next(iter(entry)))
    paths = StagePaths.for_dataset("digits")
    for path in (paths.raw, paths.prepared, paths.models, paths.data_json, paths.train_json,
                 paths.robustness_json, paths.robustness_csv, paths.drift_json, paths.drift_csv,
                 paths.report_md):
        assert path.as_posix() in declared
    assert set(stages) == {"download", "prepare", "train", "evaluate", "drift-eval", "report"}


def test_unknown_stage_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stage"):
        run_stage("deploy", ROOT / "params.yaml", tmp_path)


# --- tables -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained ResNet-18 at 16 px and digits validation images (fast; features still react to drift)."""
    from zeal_core.data import load_dataset
    from zeal_core.models.factory import ModelConfig, create_model

    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", num_classes=10, image_size=16)
    model = create_model(config).eval()
    images, labels = load_dataset("digits").split("val")
    return model, config, images[:240], labels[:240]


def test_robustness_table_matches_plain_evaluation(tiny_model) -> None:
    from zeal_core.evaluate import evaluate

    model, config, images, labels = tiny_model
    table = robustness_table(model, config, images[:40], labels[:40], ["gaussian_noise", "contrast"], [1, 5],
                             device="cpu", resize_first=False)
    plain = evaluate(model, config, images[:40], labels[:40], "cpu")
    assert table.clean_accuracy == pytest.approx(plain.accuracy)
    assert [(name, severity) for name, severity, _ in table.rows] == [
        ("gaussian_noise", 1.0), ("gaussian_noise", 5.0), ("contrast", 1.0), ("contrast", 5.0)]
    errors = [1 - accuracy for _, _, accuracy in table.rows]
    assert table.mean_corruption_error == pytest.approx(sum(errors) / 4)
    assert table.relative_mce == pytest.approx(table.mean_corruption_error - (1 - table.clean_accuracy))
    assert table.metrics()["mean_corruption_error"] == pytest.approx(table.mean_corruption_error)


def test_detector_table_flags_strong_drift_more_than_clean(tiny_model) -> None:
    model, config, images, _ = tiny_model
    settings = DetectorGridConfig(detectors=("mmd",), drifts=("gaussian_noise:5",), sample_size=40,
                                  reference_size=80, max_images=120, trials=4)
    table = detector_table(model, config, images, settings, device="cpu", seed=0)
    rates = {row.drift: row.detection_rate for row in table.rows}
    assert set(rates) == {"clean", "gaussian_noise:5"}
    assert rates["gaussian_noise:5"] == 1.0  # severity-5 noise moves every sample's features
    assert rates["clean"] < rates["gaussian_noise:5"]
    summary = table.metrics()["detectors"]["mmd"]
    assert summary["false_positive_rate"] == rates["clean"]


def test_detector_table_refuses_too_few_images(tiny_model) -> None:
    model, config, images, _ = tiny_model
    settings = DetectorGridConfig(detectors=("mmd",), sample_size=200, reference_size=200)
    with pytest.raises(ConfigError, match="reference_size"):
        detector_table(model, config, images, settings, device="cpu")


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"detectors": ("mmdx",)}, "mmdx"), ({"drifts": ("fogg:2",)}, "fogg"), ({"trials": 0}, "trials"),
    ({"alpha": 1.5}, "alpha"),
])
def test_detector_grid_refuses_bad_settings_before_embedding(settings: dict, fragment: str) -> None:
    images = torch.zeros((8, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ConfigError, match=fragment):  # no model needed: nothing is embedded
        detector_table(None, None, images, DetectorGridConfig(**settings), device="cpu")


# --- the report ---------------------------------------------------------------------------------------------


def test_write_report_tables_every_corruption_and_detector(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = "digits"
    params_file.write_text(yaml.safe_dump(params))
    paths = StagePaths.for_dataset("digits", tmp_path)
    rows = (("fog", 1.0, 0.8), ("fog", 5.0, 0.4), ("snow", 1.0, 0.7), ("snow", 5.0, 0.3))
    table = RobustnessTable(clean_accuracy=0.9, rows=rows, n=50, seconds=1.0)
    write_json(paths.data_json, {"dataset": "digits", "num_train": 10, "num_val": 5, "num_classes": 10,
                                  "image_size": 32, "fingerprint": "ab" * 32})
    write_json(paths.train_json, {"version": "digits-v1", "seconds": 3.0, "recipe": {"epochs": 1}})
    write_json(paths.robustness_json, table.metrics())
    write_csv(paths.robustness_csv, ["corruption", "severity", "accuracy", "error"],
               [[c, s, a, 1 - a] for c, s, a in table.rows])
    write_json(paths.drift_json, {"sample_size": 10, "reference_size": 20, "alpha": 0.05, "trials": 2,
                                   "seconds": 1.0, "detectors": {"mmd": {"mean_runtime_s": 0.01},
                                                                 "ks": {"mean_runtime_s": 0.02}}})
    write_csv(paths.drift_csv, ["detector", "drift", "corruption", "severity", "detection_rate"],
               [["mmd", "clean", "clean", 0, 0.0], ["mmd", "fog:5", "fog", 5, 1.0],
                ["ks", "clean", "clean", 0, 0.5], ["ks", "fog:5", "fog", 5, 0.5]])
    report = write_report(paths, load_params(params_file)).read_text()
    for word in ("fog", "snow", "mmd", "ks", "digits-v1", "90.0%", "45.0%"):  # mCE = mean error = 45 %
        assert word in report
    assert MCE_DEFINITION in report
    assert (paths.reports / "accuracy_vs_severity.png").stat().st_size > 1000
    assert json.loads(paths.robustness_json.read_text())["mean_corruption_error"] == pytest.approx(0.45)


# --- app settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "demo", "device"), [
    ({}, False, "auto"), ({"ZEAL_DEMO": "1"}, True, "cpu"),
    ({"ZEAL_DEMO": "yes", "ZEAL_DEVICE": "cuda"}, True, "cuda"),
])
def test_settings_modes(env: dict[str, str], demo: bool, device: str) -> None:
    settings = load_settings(env)
    assert isinstance(settings, AppSettings)
    assert settings.demo is demo and settings.device == device
    assert 1 <= settings.default_n <= settings.max_n
    assert settings.clamp_n(10**9) == settings.max_n and settings.clamp_n(0) == 1


def test_demo_mode_is_smaller_than_normal_mode() -> None:
    normal, demo = load_settings({}), load_settings({"ZEAL_DEMO": "1"})
    assert demo.max_n < normal.max_n and demo.default_n < normal.default_n
    assert demo.max_epochs < normal.max_epochs
    with pytest.raises(AttributeError):
        demo.demo = False  # frozen


@pytest.mark.parametrize(("env", "name"), [({"ZEAL_DEMO": "maybe"}, "ZEAL_DEMO"),
                                           ({"ZEAL_MAX_N": "ten"}, "ZEAL_MAX_N"),
                                           ({"ZEAL_DEFAULT_N": "900", "ZEAL_MAX_N": "100"}, "ZEAL_DEFAULT_N"),
                                           ({"ZEAL_DEVICE": "tpu"}, "ZEAL_DEVICE")])
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env)
