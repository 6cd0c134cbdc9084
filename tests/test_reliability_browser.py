"""Many users: five Chromium sessions on one ``streamlit run app.py`` server, plus a retrain job.

One browser, one context per user (separate cookies, so separate Streamlit sessions). Each user opens the
Drift Lab and moves the severity slider to a different value at the same time; a sixth session starts a
retrain. Checks: every session ends on its own spec and its own p-values, the health endpoint answers while
they all work, and the registry holds only complete versions afterwards. Prints the p95 drift-check time.

The server and its seeded digits model come from ``tests/test_browser.py`` (same fixture, same helpers).
"""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, p_values, server, wait_idle  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

USERS = 5
START_SEVERITY = 0.5  # every session opens the Drift Lab here
STEP = 0.25  # the slider's step
ROUNDS = 1  # slider moves per user; each one is a timed drift check
CHECK_TIMEOUT_S = 150.0  # s; five checks and a retrain share two CPU cores


def _busy(page) -> bool:
    return page.locator('[data-testid="stApp"][data-test-script-state="running"]').count() > 0


def _severity_url(value: float) -> re.Pattern:
    return re.compile(rf"spec=gaussian_noise(%3A|:){value:g}&")


def _health_s(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as response:
        assert response.read().strip() == b"ok"
    return time.perf_counter() - start


def test_five_sessions_move_sliders_while_a_retrain_runs(server: str, tmp_path_factory) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(USERS + 1):
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(CHECK_TIMEOUT_S * 1000)
                pages.append(page)
            users, retrainer = pages[:USERS], pages[USERS]
            for page in users:  # cold start: the first Drift Lab computes the reference embeddings
                page.goto(f"{server}/drift_lab?spec=gaussian_noise:{START_SEVERITY:g}@1&n=100&seed=0")
            for page in users:
                page.locator('[data-testid="stTable"]').first.wait_for()
                wait_idle(page)

            retrainer.goto(f"{server}/retrain")
            retrainer.get_by_role("button", name="Retrain").click()

            targets = [START_SEVERITY] * USERS
            timings: list[float] = []
            health: list[float] = []
            for round_index in range(ROUNDS):
                started = []
                for user, page in enumerate(users):  # user k moves k + 2 steps (+ round): all different
                    steps = user + 2 + round_index
                    targets[user] += steps * STEP
                    slider = page.locator('input[type="range"][aria-label="gaussian_noise severity"]')
                    for _ in range(steps):
                        slider.press("ArrowRight")
                    started.append(time.perf_counter())
                finished = [0.0] * USERS
                deadline = time.monotonic() + CHECK_TIMEOUT_S * 2
                while not all(finished) and time.monotonic() < deadline:
                    health.append(_health_s(server))
                    for user, page in enumerate(users):
                        if not finished[user] and _severity_url(targets[user]).search(page.url) \
                                and not _busy(page):
                            finished[user] = time.perf_counter()
                    time.sleep(0.2)
                state = [(page.url, page.locator('input[aria-label="gaussian_noise severity"]').input_value(),
                          _busy(page)) for page in users]
                assert all(finished), f"drift checks not finished: {finished}, targets {targets}, {state}"
                timings += [end - start for start, end in zip(started, finished, strict=True)]

            answers = []
            for user, page in enumerate(users):
                wait_idle(page)
                value = page.locator('input[aria-label="gaussian_noise severity"]').input_value()
                assert float(value) == targets[user]  # each session kept its own spec
                assert page.locator('[data-testid="stException"]').count() == 0
                answers.append(tuple(p_values(page)))
            assert all(answers) and len(set(answers)) > 1  # different specs, different answers

            retrainer.get_by_text("New version").wait_for(timeout=240_000)
        finally:
            browser.close()

    p95 = float(np.percentile(timings, 95))
    print(f"\n{USERS} sessions x {ROUNDS} rounds: drift check p50 {np.median(timings):.2f} s, "
          f"p95 {p95:.2f} s, max {max(timings):.2f} s; health p95 {np.percentile(health, 95):.3f} s")
    assert max(health) < 5.0  # the server kept answering while every session worked

    from zeal_core.models.registry import ModelRegistry

    for models in tmp_path_factory.getbasetemp().glob("browser*/models"):
        registry = ModelRegistry(models)
        cards = registry.list()
        assert len(cards) == 2  # the seeded model and the retrained one, nothing half-written
        for card in cards:
            registry.load(card.version)
        assert not [p for p in models.iterdir() if p.name.startswith(".")]
