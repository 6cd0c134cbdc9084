"""The DVC pipeline end to end: a copy of the repo, `dvc repro` offline on digits, then a one-param change.

Slow (a few minutes on 2 CPU cores): it trains a real model (one epoch) and runs every stage in its own
process, exactly as `dvc repro` does for a user.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _project_files() -> list[str]:
    """Tracked files plus untracked files git does not ignore (what a fresh clone plus your edits holds)."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


def _copy_project(target: Path) -> None:
    for name in _project_files():
        if name.startswith(("reports/", "data/", "models/")) or name == "dvc.lock":
            continue  # start from nothing: every stage has to run and write its own outputs
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)


def _dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # stage commands call `python`
    env["DVC_NO_ANALYTICS"] = "1"
    for variable in ("ZEAL_IMAGENETTE_URL", "ZEAL_IMAGENETTE_MD5", "ZEAL_PARAMS"):
        env.pop(variable, None)
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _edit_params(path: Path, edit) -> None:
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git-initialised copy of the project with pipeline params cut down for speed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_project(repo)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    def shrink(params: dict) -> None:
        params["dataset"] = "digits"
        params["pipeline"]["threads"] = 2
        params["train"]["digits"] = {"epochs": 1, "image_size": 16, "eval_each_epoch": False}
        params["evaluate"]["digits"] = {"corruptions": [], "severities": [2, 5], "max_images": 60}
        params["drift_eval"]["digits"] = {
            "detectors": [], "corruptions": ["gaussian_noise"], "severities": [5], "sample_size": 30,
            "reference_size": 60, "max_images": 120, "trials": 3, "alpha": 0.05,
        }

    _edit_params(repo / "params.yaml", shrink)
    return repo


def test_repro_on_digits_then_only_dependent_stages_rerun(repo: Path) -> None:
    from zeal_core.corruptions import list_corruptions, list_drift_kinds
    from zeal_core.drift import list_detectors
    from zeal_core.models.registry import ModelRegistry

    output = _dvc(repo, "repro")
    assert _ran_stages(output) == {"download", "prepare", "train", "evaluate", "drift-eval", "report"}

    reports = repo / "reports" / "digits"
    assert json.loads((repo / "data/pipeline/digits/raw/source.json").read_text())["dataset"] == "digits"
    data = json.loads((reports / "data.json").read_text())
    assert data["num_train"] + data["num_val"] == 1797 and data["num_classes"] == 10

    train = json.loads((reports / "train.json").read_text())
    model_folder = repo / "models/pipeline/digits"
    assert ModelRegistry(root=model_folder).get_active() == train["version"]
    assert (model_folder / f"{train['version']}.safetensors").stat().st_size > 1_000_000  # ResNet-18 weights
    assert train["recipe"]["epochs"] == 1

    robustness = json.loads((reports / "robustness.json").read_text())
    for key in ("clean_accuracy", "mean_corruption_error", "relative_mce", "corruption_accuracy"):
        assert key in robustness
    assert robustness["clean_accuracy"] > 0.2  # well above chance (0.1) after one epoch
    with (reports / "robustness.csv").open() as file:
        rows = list(csv.DictReader(file))
    corruptions = list_corruptions()
    assert {(row["corruption"], float(row["severity"])) for row in rows} == {
        (name, severity) for name in list_drift_kinds() for severity in (2.0, 5.0)}  # every pixel kind
    errors = [float(row["error"]) for row in rows if row["corruption"] in corruptions]  # mCE: ImageNet-C
    assert robustness["mean_corruption_error"] == pytest.approx(sum(errors) / len(errors), abs=1e-3)

    drift = json.loads((reports / "drift.json").read_text())
    assert set(drift["detectors"]) == set(list_detectors())
    for summary in drift["detectors"].values():
        assert 0.0 <= summary["false_positive_rate"] <= 1.0
        assert 0.0 <= summary["mean_detection_rate"] <= 1.0
    with (reports / "drift.csv").open() as file:
        drift_rows = list(csv.DictReader(file))
    assert {row["drift"] for row in drift_rows} == {"clean", "gaussian_noise:5"}
    assert all(int(row["trials"]) == 3 for row in drift_rows)

    report = (reports / "report.md").read_text()
    for name in corruptions + list_detectors():
        assert name in report, f"report does not mention {name}"
    assert train["version"] in report
    for image in ("accuracy_vs_severity.png", "detection_rate.png"):
        assert (reports / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Nothing changed: nothing runs.
    assert _ran_stages(_dvc(repo, "repro")) == set()

    # A late-stage knob: only drift-eval is out of date, and only it and the report re-run.
    _edit_params(repo / "params.yaml", lambda params: params["drift_eval"]["digits"].update(trials=4))
    status = json.loads(_dvc(repo, "status", "--json").strip().splitlines()[-1])
    assert set(status) == {"drift-eval"}
    output = _dvc(repo, "repro")
    assert _ran_stages(output) == {"drift-eval", "report"}
    assert "Stage 'train' didn't change" in output
    assert json.loads((reports / "drift.json").read_text())["trials"] == 4
    assert json.loads((reports / "train.json").read_text())["version"] == train["version"]
