"""Benchmark the app in a real browser: first render after server start, and slider-change latency.

Usage: ``python -m benchmarks app [--json] [--steps 6] [--baseline-root ../main]``

Starts ``streamlit run app.py`` on 127.0.0.1 with its own temporary data, models and state folders (a small
digits model is trained into them first, outside the timings), then drives Debian's Chromium with Playwright:

- ``server_ready_s``: from process start to the health endpoint answering;
- ``first_render_s``: from process start to the Home page fully drawn in the browser (target <= 5 s);
- ``drift_lab_p_values_s``: first Drift Lab view until its p-values show (embedding, detector fits, check);
- ``drift_lab_cold_s``: the same view until everything is drawn, the severity curves last (their sweep is
  computed in the background after the p-values are on the screen);
- ``slider_p_values_s``: one severity step to a spec not seen before -> its new p-values on the screen
  (median; the issue's "slider to new p-values");
- ``slider_new_spec_s``: the same steps until the page is completely redrawn (figures, images) and idle;
- ``slider_cached_s``: the same steps back down, every result cached, until idle (median).

Targets: first render <= 5 s, a new severity to new p-values <= 0.8 s (median). ``--baseline-root`` also
starts another checkout's app (e.g. the main branch) with the same model and data, in a tab of its own, and
the slider steps alternate between the two apps, so old and new are timed under the same machine load.

Numbers are wall-clock seconds on this machine; on a shared CPU they are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import script_main

ROOT = Path(__file__).resolve().parents[1]  # the project root, where app.py is
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_S = 300.0  # s allowed for any one wait


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed_model(models_dir: Path, epochs: int | None = 2) -> str:
    """Train a digits model into ``models_dir`` (``epochs=None``: the default recipe), make it active."""
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.train import default_config, train_and_register

    registry = ModelRegistry(models_dir)
    config = default_config("digits")
    card = train_and_register("digits", replace(config, epochs=epochs or config.epochs), device="cpu",
                              registry=registry)
    registry.set_active(card.version)
    return card.version


def start_app(env: dict[str, str], log_path: Path, port: int = 0,
              timeout_s: float = TIMEOUT_S, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on 127.0.0.1; returns (process, base URL) once its health check answers.

    Raises:
        RuntimeError: The server exited or did not answer in ``timeout_s`` (the message ends with its log).
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(root / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=root, env={**env, "PYTHONPATH": str(root)}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.read().strip() == b"ok":
                    return process, url
        except OSError:
            time.sleep(0.05)
        if process.poll() is not None or time.monotonic() > deadline:
            stop_app(process)
            raise RuntimeError(f"streamlit did not start; its log:\n{log_path.read_text()[-3000:]}")


def stop_app(process: subprocess.Popen) -> None:
    """Terminate a server from ``start_app`` (kill it if it does not stop within 15 s)."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_idle(page: Any, settle_s: float = 0.3, timeout_s: float = TIMEOUT_S) -> None:
    """Until the app's script has not been running for ``settle_s`` seconds (a Playwright sync page).

    Raises:
        TimeoutError: The script kept running for ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if page.locator('[data-testid="stApp"][data-test-script-state="running"]').count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return
        time.sleep(0.05)
    raise TimeoutError("the app kept running")


def _p_values(page: Any) -> str:
    return detector_table(page).locator("tbody").inner_text()


def detector_table(page: Any) -> Any:
    """The Drift Lab's detector table (the one whose header reads "what it compares")."""
    return page.locator('[data-testid="stTable"] table').filter(has_text="what it compares").first


def run(steps: int = 6, port: int = 0, baseline_root: Path | None = None) -> dict[str, Any]:
    """Run the whole benchmark; with ``baseline_root``, that checkout's app is measured beside this one,
    step by step in turns (so both see the same machine load); returns the timings."""
    work = Path(tempfile.mkdtemp(prefix="zeal-bench-app-"))
    env = dict(os.environ)
    for variable, sub in (("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"),
                          ("ZEAL_STATE_DIR", "state")):
        (work / sub).mkdir()
        env[variable] = str(work / sub)
        os.environ[variable] = str(work / sub)
    version = seed_model(work / "models")
    results: dict[str, Any] = {"model": version, "cpu_count": os.cpu_count(), "steps": steps,
                               "load_average_start": os.getloadavg()[0]}
    apps = [_App("new", ROOT, env, work, port)]
    if baseline_root is not None:
        import shutil

        base = work / "baseline"
        for sub in ("data", "models", "state"):  # the same model, in folders of its own
            shutil.copytree(work / sub, base / sub)
        base_env = {**env, **{f"ZEAL_{sub.upper()}_DIR": str(base / sub) for sub in ("data", "models",
                                                                                      "state")}}
        apps.insert(0, _App("baseline", Path(baseline_root).resolve(), base_env, base, 0))
    measured = measure(apps, steps)
    results.update(measured.pop("new"))
    if baseline_root is not None:
        results["baseline"] = {"root": str(baseline_root), **measured["baseline"]}
    results["load_average_end"] = os.getloadavg()[0]
    results["targets"] = {"first_render_s": 5.0, "slider_p_values_s": 0.8}
    return results


@dataclass
class _App:
    """One app under test: its checkout, environment and folders; its server and page once started."""

    label: str  # "new" or "baseline"
    root: Path  # the checkout whose app.py runs
    env: dict[str, str]  # its environment (data, models and state folders)
    work: Path  # where its log goes
    port: int  # 0: a free one
    server: Any = None
    page: Any = None
    results: dict[str, Any] = field(default_factory=dict)


def measure(apps: list[_App], steps: int) -> dict[str, dict[str, Any]]:
    """Start every app, then time each one's first render, cold Drift Lab and slider steps, in turns."""
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for app in apps:
                _open(app, browser)
            ups: dict[str, list[tuple[float, float]]] = {app.label: [] for app in apps}
            downs: dict[str, list[tuple[float, float]]] = {app.label: [] for app in apps}
            for key, times in (("ArrowRight", ups), ("ArrowLeft", downs)):
                for _ in range(steps):
                    for app in apps:  # in turns: the same load for every app
                        times[app.label].append(_step(app.page, key))
            for app in apps:
                app.results["projection_after_steps"] = "umap" if app.page.get_by_text("UMAP").count() \
                    else "pca"
            browser.close()
    finally:
        for app in apps:
            if app.server is not None:
                stop_app(app.server)
    for app in apps:
        shown = [first for first, _ in ups[app.label]]
        up, down = [idle for _, idle in ups[app.label]], [idle for _, idle in downs[app.label]]
        app.results.update(slider_p_values_s=statistics.median(shown),
                           slider_new_spec_s=statistics.median(up), slider_cached_s=statistics.median(down),
                           slider_p_values_all_s=[round(t, 3) for t in shown],
                           slider_new_spec_all_s=[round(t, 3) for t in up],
                           slider_cached_all_s=[round(t, 3) for t in down])
    return {app.label: app.results for app in apps}


def _open(app: _App, browser: Any) -> None:
    """Start ``app``'s server, time its first render and a cold Drift Lab."""
    start = time.monotonic()
    app.server, url = start_app(app.env, app.work / "streamlit.log", app.port, root=app.root)
    app.results["server_ready_s"] = time.monotonic() - start
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_S * 1000)
    page.goto(f"{url}/")  # Home, the default page, lives at the root
    page.get_by_text("What next").wait_for()
    wait_idle(page)
    app.results["first_render_s"] = time.monotonic() - start
    begin = time.monotonic()
    page.goto(f"{url}/drift_lab?spec=gaussian_noise:1@1&n=200&seed=0")
    detector_table(page).wait_for()
    app.results["drift_lab_p_values_s"] = time.monotonic() - begin
    page.locator(".js-plotly-plot").nth(1).wait_for()  # the severity curves are drawn last
    wait_idle(page)
    app.results["drift_lab_cold_s"] = time.monotonic() - begin
    app.results["projection"] = "umap" if page.get_by_text("UMAP").count() else "pca"
    app.page = page


def _step(page: Any, key: str) -> tuple[float, float]:
    """One severity step of the Drift Lab's slider: seconds until the new p-values show, and until the
    page's run has ended."""
    slider = page.locator('input[type="range"][aria-label="gaussian_noise severity"]')
    before = _p_values(page)
    page.bring_to_front()
    slider.focus()
    begin = time.monotonic()
    page.keyboard.press(key)
    while _p_values(page) == before and time.monotonic() - begin < TIMEOUT_S:
        time.sleep(0.01)
    shown = time.monotonic() - begin
    wait_idle(page, settle_s=0.05)
    return shown, time.monotonic() - begin - 0.05


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=6, help="severity slider steps to time (each way)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--baseline-root", type=Path, default=None,
                        help="another checkout of the project to measure first, as the baseline")


def _handler(args: argparse.Namespace) -> dict[str, Any]:
    return run(steps=args.steps, port=args.port, baseline_root=args.baseline_root)


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench app`` to the ``bench`` command."""
    sub = actions.add_parser("app", parents=[parent], help="app first render and slider latency (Chromium)")
    _add_arguments(sub)
    sub.set_defaults(handler=_handler)


def _show(results: dict[str, Any]) -> None:
    for key, value in results.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m benchmarks.app``."""
    return script_main(__doc__.splitlines()[0], _add_arguments, _handler, _show, argv)


if __name__ == "__main__":
    sys.exit(main())
