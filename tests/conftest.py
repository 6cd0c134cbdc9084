"""Shared fixtures: every test session gets its own data, models and state folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the data, models and state folders at a fresh temporary folder for each test."""
    for variable, sub in (("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"),
                          ("ZEAL_STATE_DIR", "state")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / sub))
    return tmp_path


def shown_text(markdown: str) -> str:
    """What a reader sees of Markdown source the pages escaped (``app_pages._ui.md``): backslashes gone."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown)


def pytest_configure(config: pytest.Config) -> None:
    """Keep tests from fighting over the two cores and from touching analytics or the hub."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before torch starts OpenMP: idle threads sleep instead of spinning. On a busy machine spinning threads
    # make a 2-thread step 10-30x slower; on a quiet one the cost is negligible. Subprocesses inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """A random-init digits ResNet-18's fitted reference with one cheap detector (ks, 100 images), for the
    modules that test sharing and scheduling; a module may define a ``reference`` fixture of its own."""
    from tests.test_reliability_edges import save_random_model
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.reference import ReferenceConfig, forget_references, get_reference

    models = ModelRegistry(tmp_path_factory.mktemp("models"))
    save_random_model(models)
    forget_references()
    return get_reference("latest", config=ReferenceConfig(reference_n=100, detectors=("ks",)), device="cpu",
                         registry=models)
