"""The Data page, driven headless with Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, shown_text
from tests.test_data_folder import BAD, write_folder
from tests.test_data_imagenette import ArchiveServer, closed_port, good_archive

PAGE = str((ROOT / "app_pages" / "data.py").resolve())


def open_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60).run()


def test_digits_shows_counts_chart_and_samples() -> None:
    page = open_page()
    assert not page.exception
    assert page.session_state["dataset"] == "digits"
    assert len(page.get("plotly_chart")) == 1
    assert len(page.image) == 10  # one row of samples per digit class
    assert page.metric[0].value == "1,797"


def test_imagenette_download_button_prepares_it(monkeypatch) -> None:
    server = ArchiveServer()
    try:
        server.publish(monkeypatch, good_archive())
        page = open_page()
        page.selectbox(key="data_source").set_value("imagenette").run()
        assert not page.exception and len(page.get("plotly_chart")) == 0
        assert page.session_state["dataset"] == "imagenette"
        page.button[0].click().run()
        assert not page.exception and not page.error
        assert server.requests == 1
        assert len(page.get("plotly_chart")) == 1 and len(page.image) == 3
    finally:
        server.close()


def test_imagenette_without_network_shows_a_clear_message(monkeypatch) -> None:
    monkeypatch.setenv("ZEAL_IMAGENETTE_URL", f"http://127.0.0.1:{closed_port()}/imagenette2-160.tgz")
    page = open_page()
    page.selectbox(key="data_source").set_value("imagenette").run()
    page.button[0].click().run()
    assert not page.exception
    assert len(page.error) == 1 and "cannot reach" in page.error[0].value
    assert "ZEAL_IMAGENETTE_URL" in shown_text(page.error[0].value)


@pytest.mark.parametrize("exists", [True, False])
def test_folder_path_shows_skipped_files_or_an_error(tmp_path: Path, exists: bool) -> None:
    root = write_folder(tmp_path / "pictures") if exists else tmp_path / "missing"
    page = open_page()
    page.selectbox(key="data_source").set_value("Your image folder…").run()
    page.text_input(key="data_folder").input(str(root)).run()
    assert not page.exception
    assert page.session_state["dataset"] == f"folder:{root}"
    if exists:
        assert len(page.warning) == 1 and str(len(BAD)) in page.warning[0].value
        assert len(page.image) == 2 and len(page.get("plotly_chart")) == 1
    else:
        assert len(page.error) == 1 and "does not exist" in page.error[0].value
