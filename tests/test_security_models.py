"""Untrusted model files and names: only safetensors + JSON are read, pickles never run, no path escapes.

The pickle payloads below would create a marker file when unpickled; every test checks the marker never
appears, so a regression that starts unpickling (torch.load without weights_only, pickle.load) fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from zeal_core.errors import ConfigError, DataError, ModelError
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
TINY = ModelConfig(arch="resnet18", num_classes=3, image_size=8, pretrained=False)


class CreateMarker:
    """Unpickling this object calls ``Path.touch`` on the marker path: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture
def saved(registry: ModelRegistry) -> str:
    """One real version in the per-test registry."""
    return registry.save(create_model(TINY), model_config=TINY, dataset="digits", dataset_fingerprint="f",
                         recipe={}, metrics={"val_accuracy": 0.5}).version


def _payloads(marker: Path) -> dict[str, bytes]:
    """Pickle files with a code payload: raw pickle and torch.save's zip format."""
    zipped = marker.parent / "payload.pt"
    torch.save({"weight": CreateMarker(marker)}, zipped)
    return {"pickle": pickle.dumps(CreateMarker(marker)), "torch-zip": zipped.read_bytes()}


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_pickle_renamed_to_safetensors_is_refused_and_never_run(kind: str, registry: ModelRegistry,
                                                                 saved: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = _payloads(marker)[kind]
    weights = registry.weights_path(saved)
    weights.write_bytes(payload)
    card = json.loads(registry.card_path(saved).read_text())
    card["weights_sha256"] = hashlib.sha256(payload).hexdigest()  # an attacker controls the card too
    registry.card_path(saved).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"not a safetensors file.*never loaded") as caught:
        registry.load(saved)
    assert str(weights) in str(caught.value)
    assert not marker.exists()


def test_pickle_as_pt_file_is_never_looked_at(registry: ModelRegistry, saved: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    registry.weights_path(saved).unlink()
    (registry.root / f"{saved}.pt").write_bytes(_payloads(marker)["torch-zip"])
    with pytest.raises(ModelError, match=r"no weights file .*\.safetensors"):
        registry.load(saved)
    assert registry.list() == [] and not marker.exists()


def test_changed_weights_fail_the_sha256_check_before_parsing(registry: ModelRegistry, saved: str,
                                                               tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    registry.weights_path(saved).write_bytes(_payloads(marker)["pickle"])  # card keeps the old sha256
    with pytest.raises(ModelError, match="do not match the sha256"):
        registry.load(saved)
    assert saved not in registry.versions() and not marker.exists()


ODD_CARDS = {
    "traversal version": ({"version": "../../etc/x"}, r"model version '\.\./\.\./etc/x'"),
    "absolute version": ({"version": "/etc/passwd"}, r"'/etc/passwd'"),
    "traversal parent": ({"parent": "../../models/secret"}, r"parent model version"),
    "huge head": ({"model_config": {"arch": "resnet18", "num_classes": 10**9, "image_size": 8}},
                  r"num_classes must be an integer"),
    "string config": ({"model_config": "resnet18"}, r"model_config must be a JSON object"),
    "unknown arch": ({"model_config": {"arch": "__import__('os')", "num_classes": 3, "image_size": 8}},
                     r"unknown model architecture"),
    "bool size": ({"model_config": {"arch": "resnet18", "num_classes": 3, "image_size": True}},
                  r"image_size"),
    "list strategy": ({"strategy": ["rm", "-rf"]}, r"strategy must be text"),
    "not an object": (["a", "list"], r"not a JSON object"),
    "not json": ("{'python': 'dict'}", r"not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(ODD_CARDS))
def test_odd_model_card_is_refused_with_the_file_named(case: str, registry: ModelRegistry,
                                                       saved: str) -> None:
    change, message = ODD_CARDS[case]
    card_path = registry.card_path(saved)
    card = json.loads(card_path.read_text())
    if isinstance(change, dict):
        card.update(change)
        card_path.write_text(json.dumps(card))
    else:
        card_path.write_text(change if isinstance(change, str) else json.dumps(change))
    with pytest.raises(ModelError, match=message) as caught:
        registry.load(saved)
    if case != "unknown arch":  # that card is well-formed; the arch is refused when the model is built
        assert str(card_path) in str(caught.value)
        assert saved not in registry.versions()  # list() skips it instead of failing


ESCAPES = ["..", "../models", "../../etc/passwd", "/etc/passwd", "a/b", "", ".", ".hidden", "x" * 200,
           "v1\0.json", "c:\\windows"]


@pytest.mark.parametrize("name", ESCAPES)
@pytest.mark.parametrize("method", ["load", "card", "delete", "set_active", "weights_path", "card_path"])
def test_version_names_cannot_escape_the_registry(method: str, name: str, registry: ModelRegistry) -> None:
    with pytest.raises(ConfigError, match=r"invalid model version .*no '/' or '\.\.'"):
        getattr(registry, method)(name)


def test_active_file_pointing_outside_is_ignored(registry: ModelRegistry, saved: str) -> None:
    (registry.root / "active.json").write_text(json.dumps({"version": "../../etc/passwd"}))
    assert registry.get_active() is None
    registry.set_active(saved)
    assert registry.get_active() == saved


def test_save_refuses_an_unsafe_parent(registry: ModelRegistry) -> None:
    with pytest.raises(ConfigError, match="parent model version"):
        registry.save(create_model(TINY), model_config=TINY, dataset="digits", dataset_fingerprint="",
                      recipe={}, metrics={}, parent="../escape")
    assert list(registry.root.iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "..", "a/b"])
def test_job_ids_cannot_escape_the_state_folder(name: str) -> None:
    from zeal_core.jobs import JobQueue

    with pytest.raises(ConfigError, match=r"invalid job id"):
        JobQueue().get(name)


def test_folder_dataset_cache_name_stays_inside_data_dir(tmp_path: Path) -> None:
    from zeal_core.data.folder import folder_cache_path
    from zeal_core.data.settings import folder_settings
    from zeal_core.paths import data_dir

    odd = tmp_path / "..weird name;rm -rf $HOME"
    cache = folder_cache_path(odd, folder_settings(16), "0" * 64)
    assert cache.parent == data_dir() / "folders"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", cache.name)


def test_folder_datasets_stay_inside_the_allowed_roots(tmp_path: Path, monkeypatch) -> None:
    from zeal_core import data

    allowed = tmp_path / "shared"
    (allowed / "pets" / "cats").mkdir(parents=True)
    (tmp_path / "private" / "keys").mkdir(parents=True)
    monkeypatch.setenv("ZEAL_FOLDER_ROOTS", str(allowed))
    for name in (f"folder:{tmp_path / 'private'}", f"folder:{allowed}/../private", "folder:/etc"):
        with pytest.raises(DataError, match=r"outside the folders this server may read .*ZEAL_FOLDER_ROOTS"):
            data.load_dataset(name)
    (allowed / "pets" / "escape").symlink_to(tmp_path / "private", target_is_directory=True)
    with pytest.raises(DataError, match="outside"):
        data.load_dataset(f"folder:{allowed / 'pets' / 'escape'}")  # resolved before the check
    with pytest.raises(DataError, match=r"no class subfolders|no readable image"):
        data.load_dataset(f"folder:{allowed / 'pets'}")  # inside: allowed (and merely empty)


def test_no_module_unpickles() -> None:
    """Static guard: no pickle.load(s), joblib, np.load(allow_pickle) or torch.load without weights_only."""
    offenders = []
    for path in [*(ROOT / "zeal_core").rglob("*.py"), *(ROOT / "app_pages").glob("*.py"), ROOT / "app.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"pickle\.loads?\(|joblib\.load|allow_pickle\s*=\s*True|dill\.load", code) or (
                    "torch.load(" in code and "weights_only=True" not in code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
