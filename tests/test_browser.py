"""End to end in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's Chromium.

Opens the Drift Lab, moves a severity slider with the keyboard and sees the p-values change, clicks Retrain
and sees a new model version, and screenshots every page (into ``$ZEAL_SCREENSHOTS`` when set, e.g.
``ZEAL_SCREENSHOTS=docs/screenshots``, otherwise a temporary folder).
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.app import CHROMIUM as CHROMIUM_PATH
from benchmarks.app import CHROMIUM_ARGS, detector_table, seed_model, start_app, stop_app
from benchmarks.app import wait_idle as bench_wait_idle
from tests.conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path(CHROMIUM_PATH)
SERVER_START_S = 90  # s; the first start imports torch, timm and plotly on a shared CPU
PAGE_TIMEOUT_MS = 120_000  # ms for one page to finish its work (a cold Drift Lab computes embeddings)
PAGES = ["home", "data", "model", "drift_lab", "retrain", "monitor", "upload"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running app on 127.0.0.1 with its own data, models and state folders; yields its base URL."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    root = tmp_path_factory.mktemp("browser")
    env = dict(os.environ)
    for variable, sub in (("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"),
                          ("ZEAL_STATE_DIR", "state")):
        (root / sub).mkdir()
        env[variable] = str(root / sub)
    # A quick model for the checks; the default recipe when screenshots are wanted (they go in the README).
    seed_model(root / "models", epochs=None if os.environ.get("ZEAL_SCREENSHOTS") else 2)
    try:
        process, url = start_app(env, root / "streamlit.log", timeout_s=SERVER_START_S)
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        yield url
    finally:
        stop_app(process)


@pytest.fixture(scope="module")
def browser_page(server: str) -> Iterator:
    """One Chromium tab at 1280 x 900."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        yield page
        browser.close()


def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$ZEAL_SCREENSHOTS`` (relative to the project) when set, else a temporary folder."""
    target = os.environ.get("ZEAL_SCREENSHOTS")
    folder = (ROOT / target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_idle(page, settle_s: float = 1.0) -> None:
    """Wait until the app's script has not been running for ``settle_s`` seconds."""
    bench_wait_idle(page, settle_s=settle_s, timeout_s=PAGE_TIMEOUT_MS / 1000)


def save_screenshot(page, folder: Path, name: str, max_height: int = 3200) -> Path:
    """The whole page (Streamlit scrolls inside its main block, so the viewport is grown to fit it first),
    reduced to a 256-colour PNG so that it stays small enough for the README."""
    from PIL import Image

    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]')?.scrollHeight || 0")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, max_height))})
    time.sleep(0.5)  # let plotly redraw at the new size
    try:
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    finally:
        page.set_viewport_size(size)
    path = folder / f"{name}.png"
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    if path.stat().st_size > 280_000:  # photo-like pages (sample grids): fewer colours keep it small
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def p_values(page) -> list[str]:
    """The p-value column of the Drift Lab's detector table, as shown."""
    table = detector_table(page)
    headers = [cell.inner_text().strip() for cell in table.locator("thead th").all()]
    column = headers.index("p-value")
    return [row.locator("th, td").nth(column).inner_text().strip() for row in table.locator("tbody tr").all()]


def test_drift_lab_retrain_and_every_page(browser_page, server: str,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    page = browser_page
    folder = screenshots_dir(tmp_path_factory)

    # Drift Lab: mild noise on every image, then the severity slider moved up 12 steps of 0.25 by keyboard.
    page.goto(f"{server}/drift_lab?spec=gaussian_noise:0.5@1&n=200&seed=0")
    page.get_by_text("Verdict").first.wait_for()
    detector_table(page).wait_for()
    wait_idle(page)
    # The first request of a fresh server: it must have gone through app.py (sidebar status, our pages only).
    assert page.locator('[data-testid="stSidebar"]').get_by_text("Device:").count() > 0
    before = p_values(page)
    assert before and all(value for value in before)
    slider = page.locator('input[type="range"][aria-label="gaussian_noise severity"]')
    assert slider.input_value() == "0.5"
    slider.focus()
    for _ in range(12):  # 12 steps of 0.25: severity 0.5 -> 3.5
        page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('input[aria-label=\"gaussian_noise severity\"]')"
                           "?.value === '3.5'")
    # The URL carries the spec once the fragment has rerun for the final value (intermediate values may
    # have run first, as each key press asks for a rerun).
    page.wait_for_url(re.compile(r"spec=gaussian_noise(%3A|:)3\.5&"))
    wait_idle(page)
    after = p_values(page)
    assert len(after) == len(before) and after != before, f"p-values did not change: {before}"
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, folder, "drift_lab")

    # Retrain: the cheapest strategy (bn-adapt, first in the list) on the Drift Lab's spec.
    page.goto(f"{server}/retrain")
    page.get_by_role("button", name="Retrain").wait_for()
    page.get_by_role("button", name="Retrain").click()
    page.get_by_text("New version").wait_for(timeout=240_000)
    wait_idle(page)
    save_screenshot(page, folder, "retrain")

    for name in PAGES:
        if name in ("drift_lab", "retrain"):
            continue
        # The default page (Home) is served at the root; its url_path is not a URL of its own.
        page.goto(f"{server}/" if name == "home" else f"{server}/{name}")
        page.locator('[data-testid="stMainBlockContainer"] h1').first.wait_for()
        wait_idle(page, settle_s=1.5)
        assert page.get_by_text("Page not found").count() == 0, f"page {name} is not reachable by its URL"
        if name == "monitor" and os.environ.get("ZEAL_SCREENSHOTS"):  # the README shows a finished stream
            page.get_by_role("button", name="Run the stream").click()
            page.get_by_text("Detection delay").wait_for(timeout=300_000)
            wait_idle(page, settle_s=1.5)
        assert page.locator('[data-testid="stException"]').count() == 0, f"exception on page {name}"
        path = save_screenshot(page, folder, name)
        assert path.stat().st_size > 0
    assert {path.stem for path in folder.glob("*.png")} >= set(PAGES)
