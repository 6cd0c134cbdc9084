"""Hardened pages (issue 26), through AppTest: a demo shows no server path and gates costly actions, a damaged
history or model is said with its fix instead of a traceback, uploads are decoded once, and user text is
shown as text (file names, the Drift Lab's ``?spec=``)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, shown_text
from zeal_core.settings import get_settings

TIMEOUT_S = 180  # s per script run; the CPU is shared and a cold page computes embeddings
PAYLOAD = "![x](http:&#47;&#47;127.0.0.1:9&#47;p.png)"  # a file name (&#47; is "/") that loads an image


@pytest.fixture(scope="module", autouse=True)
def isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One set of folders for the module, with a seeded untrained digits model made active."""
    root = tmp_path_factory.mktemp("reliability_pages")
    with pytest.MonkeyPatch.context() as patch:
        for variable, sub in (("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"),
                              ("ZEAL_STATE_DIR", "state")):
            (root / sub).mkdir()
            patch.setenv(variable, str(root / sub))
        from tests.test_reliability_edges import save_random_model
        from zeal_core.models.registry import ModelRegistry

        registry = ModelRegistry()
        registry.set_active(save_random_model(registry))
        yield root


@pytest.fixture()
def demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Demo mode with its default permissions (``ZEAL_DEMO=1``, as in the Docker image)."""
    monkeypatch.setenv("ZEAL_DEMO", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("ZEAL_DEMO")
    get_settings.cache_clear()


def page(name: str, **query: str) -> AppTest:
    """The app (app.py) run once, then switched to ``app_pages/<name>.py``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    return at.switch_page(f"app_pages/{name}.py").run()


def texts(at: AppTest) -> list[str]:
    """Everything the page wrote as text or Markdown (main area and sidebar), with help texts, labels and
    image captions (Markdown source, as the browser receives it)."""
    found = [image.caption for element in at.get("image") for image in element.proto.imgs]
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "toast", "title", "subheader"):
        found += [element.value for element in at.get(kind)]
        found += [element.value for element in at.sidebar.get(kind)]
    found += [f"{metric.label} {metric.value} {getattr(metric, 'help', '') or ''}" for metric in at.metric]
    found += [f"{widget.label} {getattr(widget, 'help', '') or ''}"
              for kind in ("button", "text_input", "selectbox") for widget in at.get(kind)]
    return found


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def button(at: AppTest, label: str):
    return next(widget for widget in at.button if widget.label == label)


# ------------------------------------------------------------------------------------------- demo mode


def test_demo_data_page_offers_only_allowed_folders_and_shows_no_path(
        demo: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a visitor typed /usr/share/doc or /etc and the page listed and loaded it; "/" crashed."""
    root = tmp_path / "shared"
    for class_name in ("cats", "dogs"):
        (root / "pets" / class_name).mkdir(parents=True)
        for index in range(4):
            (root / "pets" / class_name / f"{index}.png").write_bytes(png(index))
    at = page("data")
    at.selectbox(key="data_source").set_value("Your image folder…").run()
    assert not at.exception
    assert not [box for box in at.text_input if box.label == "Folder path"]  # nothing to type a path into
    assert any("offers no image folders" in text for text in texts(at))

    monkeypatch.setenv("ZEAL_FOLDER_ROOTS", str(root))
    at = page("data")
    at.selectbox(key="data_source").set_value("Your image folder…").run()
    assert at.selectbox(key="data_allowed_folder").options == ["shared/pets"]
    assert not at.exception
    assert any(metric.label == "Images" and metric.value == "8" for metric in at.metric)
    assert not [text for text in texts(at) if str(tmp_path) in text]  # no server path anywhere


def test_demo_model_page_imports_only_uploads_and_gates_changes(demo: None) -> None:
    at = page("model")
    assert not at.exception
    assert not [box for box in at.text_input if box.key == "import_path"]  # no checkpoint path on the server
    assert at.button(key="import_submit").disabled
    assert at.button(key="model_make_active").disabled
    assert "Switched off in this demo" in (at.button(key="import_submit").help or "")


def test_demo_gates_retrain_delete_policy_and_stream_jobs(demo: None) -> None:
    from tests.test_reliability_edges import save_random_model
    from zeal_core.jobs import JobQueue
    from zeal_core.models.registry import ModelRegistry

    other = save_random_model(ModelRegistry())  # a version that is not the active one, to activate
    at = page("retrain")
    assert not at.exception
    assert button(at, "Retrain").disabled
    at.selectbox(key="retrain_version").set_value(other).run()
    assert not at.exception
    assert at.button(key="retrain_delete").disabled and at.button(key="retrain_chosen_activate").disabled
    ModelRegistry().delete(other)

    def forged_click() -> None:  # what a page does when a disabled button's click is forged
        from app_pages._ui import submit_job

        submit_job("retrain", {"model": "any", "strategy": "bn-adapt", "drift": "gaussian_noise:5"})

    forged = AppTest.from_function(forged_click, default_timeout=TIMEOUT_S).run()
    assert not forged.exception and JobQueue().list() == []  # nothing queued
    assert any("Switched off in this demo" in element.value for element in forged.error)

    at = page("monitor")
    assert at.button(key="monitor_run").disabled and button(at, "Save the policy").disabled
    assert not [text for text in texts(at) if os.environ["ZEAL_STATE_DIR"] in text]  # no history path


def test_demo_still_lets_a_first_visitor_train_the_default_model(
        demo: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The one costly action a demo allows by default: Home's training button while there is no model."""
    monkeypatch.setenv("ZEAL_MODELS_DIR", str(tmp_path / "empty"))
    at = page("home")
    assert not at.exception
    assert not at.button(key="first_run_train").disabled
    monkeypatch.setenv("ZEAL_DEMO_ALLOW", "none")
    get_settings.cache_clear()
    assert page("home").button(key="first_run_train").disabled


# ------------------------------------------------------------------------------ damaged history, model


def _damage_history() -> Path:
    path = Path(os.environ["ZEAL_STATE_DIR"]) / "history" / "history.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database " * 300)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def test_monitor_and_upload_say_the_history_is_damaged_and_how_to_repair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``sqlite3.DatabaseError`` tracebacks on both pages."""
    import zeal_core.data
    from zeal_core.history.repair import repair

    path = _damage_history()
    try:
        at = page("monitor")
        assert not at.exception
        errors = [element.value for element in at.error]
        assert any("damaged" in text and "history repair" in text for text in errors)

        calls = []
        original = zeal_core.data.decode_images

        def counting(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(zeal_core.data, "decode_images", counting)
        at = page("upload")
        at.file_uploader(key="upload_files").set_value(
            [(f"b_{index}.png", png(index), "image/png") for index in range(12)]).run()
        assert not at.exception
        assert any(metric.label == "Verdict" for metric in at.metric)  # the report stands
        assert any(metric.label == "History check" and metric.value == "—" for metric in at.metric)
        assert any("history repair" in element.value for element in at.error)
        at.toggle(key="upload_record").set_value(False).run()  # a widget change: no second decode
        assert not at.exception and len(calls) == 1
    finally:
        repair(path)


def test_pages_name_a_damaged_active_model_instead_of_using_another() -> None:
    from tests.test_reliability_edges import _damage_weights, save_random_model
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    active = registry.get_active()
    spare = save_random_model(registry)
    saved = registry.weights_path(active).read_bytes()
    _damage_weights(registry, active)
    try:
        for name in ("drift_lab", "model"):
            at = page(name)
            assert not at.exception
            errors = [shown_text(element.value) for element in at.error]
            assert any(f"active model version {active}" in text for text in errors), name
        assert spare not in " ".join(element.value for element in page("drift_lab").metric)
    finally:
        registry.weights_path(active).write_bytes(saved)
        registry.delete(spare)


# --------------------------------------------------------------------------------------- text, not Markdown


def test_uploaded_file_names_are_shown_as_text_on_upload_and_history() -> None:
    """Before: a file named like ``![x](http://HOST/p.png).png`` made every visitor of Monitor -> History
    load HOST's image (the name reached ``st.caption`` as Markdown). The Chromium test proves no request."""
    at = page("upload")
    files = [(f"{PAYLOAD}{index}.png", png(index), "image/png") for index in range(8)]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception
    shown = texts(at)
    assert not [text for text in shown if "![x](" in text]
    assert any("\\!\\[x\\]\\(" in text for text in shown)  # thumbnails' captions: shortened, escaped

    at = page("monitor")
    assert not at.exception
    captions = [element.value for element in at.caption]
    assert any("\\!\\[x\\]" in text for text in captions)
    assert not [text for text in texts(at) if "![x](" in text or "](http" in text]


def test_drift_lab_spec_from_the_url_is_shown_as_text() -> None:
    """Before: ``?spec=`` text reached ``st.toast`` as Markdown (a crafted link showed in the toast)."""
    at = page("drift_lab", spec="[click here](http://127.0.0.1:9/login)")
    assert not at.exception
    toasts = [element.value for element in at.toast]
    assert toasts and all("](http" not in text for text in toasts)
    assert any("\\[click here\\]" in text for text in toasts)


def test_data_page_with_the_root_folder_says_so(tmp_path: Path) -> None:
    at = page("data")
    at.selectbox(key="data_source").set_value("Your image folder…").run()
    at.text_input(key="data_folder").set_value("/").run()
    assert not at.exception
    assert any("root of the disk" in element.value for element in at.error)


def test_data_page_lists_a_folder_with_non_utf8_file_names(tmp_path: Path) -> None:
    from tests.test_reliability_edges import _non_utf8_folder

    folder = _non_utf8_folder(tmp_path)
    at = page("data")
    at.selectbox(key="data_source").set_value("Your image folder…").run()
    at.text_input(key="data_folder").set_value(str(folder)).run()
    assert not at.exception
    assert any(metric.label == "Images" and metric.value == "12" for metric in at.metric)


@pytest.mark.parametrize("text", ["gaussian_noise:3", "a`b", "``x``", "`", "two\nlines", "[l](http://h)"])
def test_code_span_holds_any_text_literally(text: str) -> None:
    """``_ui.code``: the fence outgrows every backtick run inside, so the text cannot close it early."""
    from app_pages._ui import code

    span = code(text)
    fence = span[: len(span) - len(span.lstrip("`"))]
    inner = span[len(fence): len(span) - len(fence)]
    assert span.endswith(fence) and "`" * len(fence) not in inner
    assert inner.strip() == " ".join(text.split())
