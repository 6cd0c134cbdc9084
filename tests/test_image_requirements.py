"""The Docker image's requirement list (scripts/image_requirements.py) and the CPU torchvision pairing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_PAIR = {"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpushim"}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


image_requirements = _script("image_requirements")
cpu_torchvision = _script("cpu_torchvision")


def _lines(root: Path) -> dict[str, str]:
    lines = image_requirements.image_requirements(root, CPU_PAIR["torch"], CPU_PAIR["torchvision"])
    return dict(line.split("==", 1) for line in lines)


def test_this_checkout_gives_runtime_pins_and_the_cpu_pair():
    pins = _lines(ROOT)
    assert pins["torch"] == CPU_PAIR["torch"] and pins["torchvision"] == CPU_PAIR["torchvision"]
    for name in ("streamlit", "timm", "numpy", "frouros"):
        assert name in pins, f"{name} missing from the image's requirements"
    assert not set(pins) & image_requirements.TEST_ONLY


def test_requirements_txt_layout_drops_test_tools(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "requirements.txt").write_text(
        "torch==2.14.1\ntorchvision==0.29.1\nnumpy==2.1.3  # pinned\n# tests\npytest==9.2.0\nruff==0.17.5\n"
        "playwright==1.65.2\nsetuptools<81\n")
    assert _lines(tmp_path) == {"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpushim", "numpy": "2.1.3"}


def test_pyproject_layout_takes_pins_from_constraints(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["torch>=2.4", "timm", "numpy>=2", "dvc[ssh]>=3"]\n'
        '[project.optional-dependencies]\ntest = ["pytest"]\n')
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\n-e .[test]\n")
    (tmp_path / "constraints.txt").write_text("torch==2.14.1\ntimm==1.0.31\nnumpy==2.1.3\ndvc==3.67.1\n"
                                              "pytest==9.2.0\n")
    lines = image_requirements.image_requirements(tmp_path, CPU_PAIR["torch"], CPU_PAIR["torchvision"])
    assert lines == ["torch==2.13.0+cpu", "timm==1.0.31", "numpy==2.1.3", "dvc[ssh]==3.67.1",
                     "torchvision==0.28.0+cpushim"]


def test_markers_are_kept():
    item = image_requirements.parse("pywin32==306 ; sys_platform == 'win32'")
    assert item.line() == "pywin32==306 ; sys_platform == 'win32'"
    assert image_requirements.parse("-r other.txt") is None and image_requirements.parse("# note") is None


@pytest.mark.parametrize(("torch", "torchvision"), [("2.13.0+cpu", "0.28.0"), ("2.14.1", "0.29.1"),
                                                    ("2.9.0", "0.24.0")])
def test_torchvision_release_for_torch(torch, torchvision):
    assert cpu_torchvision.matching_torchvision(torch) == torchvision


def test_unknown_torch_version_is_refused():
    with pytest.raises(SystemExit, match="--torchvision"):
        cpu_torchvision.matching_torchvision("1.13.1")
