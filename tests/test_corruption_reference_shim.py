"""The ``imagecorruptions`` reference shim lives in the package, imports the reference only when asked, and
says how to install it when it is missing; no library module imports from ``tests/``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from benchmarks import _corruption_reference as corruption_reference
from tests.conftest import ROOT
from zeal_core.errors import ConfigError


@pytest.fixture
def reference_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import imagecorruptions`` fail, as on an install without it."""
    monkeypatch.setattr(corruption_reference, "_REFERENCE", None)
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # None in sys.modules: ImportError on import


def test_missing_reference_names_the_install_command(reference_missing) -> None:
    assert corruption_reference.load_reference() is None
    reason = corruption_reference.unavailable_reason()
    assert reason is not None and "pip install imagecorruptions" in reason and "ModuleNotFoundError" in reason
    with pytest.raises(ConfigError, match="pip install imagecorruptions"):
        corruption_reference.require_reference()
    with pytest.raises(ConfigError, match="test/benchmark reference only"):
        corruption_reference.reference_corrupt(None, "fog", 1)


def test_benchmark_without_the_reference_says_why(reference_missing) -> None:
    from benchmarks.corruptions import run_corruption_benchmark

    result = run_corruption_benchmark(n=4, size=16, names=["contrast"], reference=True)
    assert "pip install imagecorruptions" in result["reference_skipped"]
    assert [set(row) for row in result["rows"]] == [{"name", "ours_images_per_s"}]  # ours still timed


def test_library_never_imports_from_tests() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+tests\b|import_module\(\s*[\"']tests\.", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for path in sorted(Path(ROOT / "zeal_core").rglob("*.py"))
                 if pattern.search(path.read_text())]
    assert offenders == []


def test_the_shim_is_not_a_bench_action() -> None:
    from benchmarks._actions import bench_actions

    actions = bench_actions()
    assert "corruptions" in actions and all(hasattr(module, "register") for module in actions.values())
