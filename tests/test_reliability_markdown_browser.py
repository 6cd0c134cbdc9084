"""Markdown injection in a real browser (issue 26): no request leaves for a host named in a file name.

Before the fix, a file uploaded as ``![x](http:&#47;&#47;HOST&#47;p.png).png`` (``&#47;`` is ``/``, which
a file name cannot hold; Markdown decodes the entity inside a link) was shown by ``st.caption`` on
Monitor -> History as an image, so every visitor's browser fetched it from HOST. Here HOST is a loopback
HTTP server of this test that records every request; the app runs with ``streamlit run app.py`` and
Chromium uploads the files, then opens Monitor -> History. The recorder must stay empty, and the page must
show the name as text.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, start_app, stop_app, wait_idle

pytestmark = pytest.mark.browser

SERVER_START_S = 120  # s; the first start imports torch, timm and plotly on a shared CPU
PAGE_TIMEOUT_S = 240  # s for one page's work (the upload page fits the reference)


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a 1 x 1 PNG and remembers the path (a tracking pixel's server)."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # the http.server name
        type(self).requests.append(self.path)
        buffer = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buffer, format="PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(buffer.getvalue())

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def tracker() -> Iterator[str]:
    """The loopback host the payload points at; yields ``127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    root = tmp_path_factory.mktemp("markdown_browser")
    env = dict(os.environ)
    for variable, sub in (("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"),
                          ("ZEAL_STATE_DIR", "state")):
        (root / sub).mkdir()
        env[variable] = str(root / sub)
    from tests.test_reliability_edges import save_random_model
    from zeal_core.models.registry import ModelRegistry

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZEAL_DATA_DIR", env["ZEAL_DATA_DIR"])
        registry = ModelRegistry(root / "models")
        registry.set_active(save_random_model(registry))
    process, url = start_app(env, root / "streamlit.log", timeout_s=SERVER_START_S)
    try:
        yield url
    finally:
        stop_app(process)


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")).save(
        buffer, format="PNG")
    return buffer.getvalue()


def test_file_names_never_make_the_browser_fetch_anything(app: str, tracker: str,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    payload = f"![x](http:&#47;&#47;{tracker}&#47;p.png)"
    files = [{"name": f"{payload}{index}.png", "mimeType": "image/png", "buffer": png(index)}
             for index in range(10)]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
        page.goto(f"{app}/upload")
        wait_idle(page, settle_s=1.0, timeout_s=PAGE_TIMEOUT_S)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
        page.get_by_text("Images tested").first.wait_for()
        wait_idle(page, settle_s=2.0, timeout_s=PAGE_TIMEOUT_S)
        page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
        upload_text = page.locator('[data-testid="stMain"]').inner_text()

        page.goto(f"{app}/monitor")
        wait_idle(page, settle_s=1.0, timeout_s=PAGE_TIMEOUT_S)
        page.get_by_role("tab", name="History").click()
        page.get_by_text("Most drift-typical images").first.wait_for()
        wait_idle(page, settle_s=2.0, timeout_s=PAGE_TIMEOUT_S)
        page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
        history_text = page.locator('[data-testid="stMain"]').inner_text()
        links = page.locator(f'img[src*="{tracker}"], a[href*="{tracker}"]').count()
        browser.close()
    if os.environ.get("ZEAL_SCREENSHOTS_H26"):  # for a person to look at
        for name in ("upload.png", "history.png"):
            (Path(os.environ["ZEAL_SCREENSHOTS_H26"]) / name).write_bytes((tmp_path / name).read_bytes())
    assert Recorder.requests == [], Recorder.requests  # nothing left the server for the named host
    assert links == 0
    assert "![x](" in upload_text  # thumbnails' captions: the name (shortened) as the characters it is
    assert f"![x](http:&#47;&#47;{tracker}" in history_text  # made of; the history shows it whole
