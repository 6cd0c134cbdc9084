"""The Model page's import form (upload or server path) and export downloads, driven by AppTest."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, shown_text
from tests.test_models_import import CreateMarker, snapshot
from zeal_core.models.factory import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry

TIMEOUT_S = 180  # s per script run; the CPU is shared


def model_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception
    at.switch_page("app_pages/model.py").run()
    assert not at.exception
    return at


def test_upload_imports_a_version_and_offers_its_export() -> None:
    torch.manual_seed(0)
    data = safetensors_bytes(create_model(ModelConfig(num_classes=10)).state_dict())
    at = model_page()
    assert at.checkbox(key="train_pretrained").value is False  # the pretrained start is offered
    at.file_uploader(key="import_upload").upload("my-resnet.safetensors", data)
    at.button(key="import_submit").click().run()
    assert not at.exception
    assert not at.error, [error.value for error in at.error]
    message = at.success[0].value
    registry = ModelRegistry()
    [card] = registry.list()
    assert f"Imported my-resnet.safetensors as {card.version}" in shown_text(message)
    assert "validation accuracy" in message
    assert registry.get_active() == card.version and card.strategy == "import"
    assert at.selectbox(key="model_version").value == card.version
    labels = [button.label for button in at.get("download_button")]
    assert labels == ["Weights", "Card (JSON)"]


def test_a_pickle_with_code_on_a_server_path_is_refused_on_the_page(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "x": CreateMarker(marker)}, path)
    registry = ModelRegistry()
    before = snapshot(registry.root)
    at = model_page()
    at.text_input(key="import_path").set_value(str(path))
    at.button(key="import_submit").click().run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and "evil.pth holds Python objects other than tensors" in shown_text(errors[0])
    assert "refused without running" in errors[0]
    assert not marker.exists() and snapshot(registry.root) == before
    assert any("No versions yet" in info.value for info in at.info)
